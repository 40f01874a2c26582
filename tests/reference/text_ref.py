"""text_ref.py: an independent reference of the clipself text side (the CLIP BPE tokenizer and
the open_clip text transformer); writes the test fixtures and computes class embeddings.

Usage: /usr/bin/python3 tests/reference/text_ref.py --out DIR --data data
       /usr/bin/python3 tests/reference/text_ref.py embed --model M.safetensors
           (--categories FILE | --names-from-json FILE) [--templates FILE] [--plain-prompts]
           --bpe BPE.gz --out OUT.npy

The tokenizer is written here from the algorithm of OpenAI's simple_tokenizer (byte-level BPE,
lowest merge rank first, every occurrence left to right), with the `regex` module for the
pattern and Python's str.lower; ftfy.fix_text and html.unescape are left out on both sides
(ftfy is not packaged for Debian). The text transformer is built from torch modules as open_clip
builds it: nn.Embedding, a learned positional embedding, pre-LN blocks of nn.MultiheadAttention
with the causal mask (-inf above the diagonal) and an MLP, ln_final, the feature at the argmax
of the token ids, @ text_projection. Float32, seeded, 2 threads.

Fixtures (all in --out)
  text_tokens.tsv   one line per test text: the text's UTF-8 bytes in hex, TAB, the length
                    with start and end tokens before truncation, TAB, the 77 ids as open_clip's
                    tokenize gives them (truncated: first 76 kept and the end token last),
                    without the zero padding, space-separated. About 700 texts: the issue's four
                    examples, the 133 COCO panoptic names, the 80 ImageNet templates x 5 names,
                    non-ASCII (accents, Greek final sigma, dotted I, CJK, emoji, other digits),
                    apostrophes, white space of every kind, special tokens written in the text,
                    over-long texts and seeded random strings.
  Text towers (safetensors, F32, tensors in name order; see CONFIGS):
    text_tiny.openclip.safetensors  open_clip names at the top level ("token_embedding.weight",
                    "positional_embedding", "transformer.resblocks.N.{ln_1, attn.in_proj_weight,
                    attn.in_proj_bias, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}",
                    "ln_final", "text_projection" (C, E)) and "logit_scale";
                    metadata clipself.text_heads = "4", clipself.act = "gelu".
    text_tiny.eva.safetensors       the same under "text." (EVA-CLIP), logit_scale top-level.
    text_tiny.eva_noact.safetensors the same without clipself.act: EVA-CLIP names mean GELU.
    text_tiny.hf.safetensors        Hugging Face CLIPModel names: text_model.embeddings.
                    {token_embedding.weight, position_embedding.weight, position_ids (I64)},
                    text_model.encoder.layers.N.{layer_norm1, self_attn.{q,k,v,out}_proj,
                    layer_norm2, mlp.fc1, mlp.fc2}, text_model.final_layer_norm,
                    text_projection.weight (E, C) = text_projection transposed, logit_scale.
    text_small.openclip.safetensors no metadata: heads = width / 64, QuickGELU.
    textvis.safetensors             a text tower with the real vocabulary (49408) and context
                    (77), width 32, AND vit_ref's tiny open_clip vision tower (embed 32) under
                    "visual.": one file that loads as both towers. Metadata: clipself.heads 4,
                    clipself.act gelu, clipself.ln_eps (the vision tower's), clipself.text_heads
                    2, clipself.text_act quickgelu.
    text_bad_missing    text_tiny.openclip without "ln_final.bias"
    text_bad_shape      "text_projection" declared [E, C] (same bytes)
    text_bad_unexpected an extra "transformer.resblocks.0.attn.extra_weight" (C,)
    text_bad_truncated  text_tiny.openclip cut 100 bytes before its end
    text_bad_none       vit_ref's tiny vision tower only (no text tower)
  text.h5: per tower group /tiny, /small, /textvis:
      attributes width, layers, heads, mlp, embed, vocab, context (int64), act (string)
      tokens (B, context) int32   token rows padded with zeros; rows have their highest id at
                                  various positions, some with non-zero tokens after it (the
                                  causal mask must hide them), one with the highest id twice
      pool (B,) int32             the pooled position (first argmax)
      out (B, E)                  pooled, ln_final, @ text_projection (not normalised)
"""
import argparse
import gzip
import json
import math
import os
import random
import sys
import time
from collections import OrderedDict

import h5py
import numpy as np
import regex
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vit_ref  # noqa: E402  (its safetensors writer and its tiny vision tower)

CONTEXT = 77
CONFIGS = {
    "tiny": dict(width=48, layers=2, heads=4, mlp=192, embed=24, vocab=1000, context=16,
                 act="gelu", meta=True, batch=6),
    "small": dict(width=128, layers=1, heads=2, mlp=256, embed=32, vocab=500, context=12,
                  act="quickgelu", meta=False, batch=4),
    "textvis": dict(width=32, layers=2, heads=2, mlp=128, embed=32, vocab=49408, context=77,
                    act="quickgelu", meta=True, batch=4),
}


# ---- the tokenizer -----------------------------------------------------------------------------

class Tokenizer:
    """CLIP's byte-level BPE, written from its definition."""
    PATTERN = (r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"
               r"[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")
    SPECIAL = ("<|startoftext|>", "<|endoftext|>")

    def __init__(self, bpe_path):
        text = gzip.open(bpe_path).read().decode("utf-8")
        merges = [tuple(line.split()) for line in text.split("\n")[1:49152 - 256 - 2 + 1]]
        # printable Latin-1 bytes are their own character; the others take U+0100.. in order
        printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or b >= 174]
        others = [b for b in range(256) if b not in printable]
        self.char = {b: chr(b) for b in printable}
        self.char.update({b: chr(256 + i) for i, b in enumerate(others)})
        alphabet = [self.char[b] for b in printable + others]
        vocab = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
        vocab += list(self.SPECIAL)
        self.id = {s: i for i, s in enumerate(vocab)}
        self.rank = {m: i for i, m in enumerate(merges)}
        self.pattern = regex.compile(self.PATTERN, regex.IGNORECASE)
        self.sot, self.eot = self.id[self.SPECIAL[0]], self.id[self.SPECIAL[1]]

    @staticmethod
    def clean(text):
        text = regex.sub(r"\s+", " ", text.strip()).strip()
        return text.lower()

    def bpe(self, piece):
        if piece in self.SPECIAL:
            return [piece]
        word = [self.char[b] for b in piece.encode("utf-8")]
        word[-1] += "</w>"
        while len(word) > 1:
            ranked = [self.rank[p] for p in zip(word, word[1:]) if p in self.rank]
            if not ranked:
                break
            first, second = self.merge_of(min(ranked))
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def merge_of(self, rank):
        if not hasattr(self, "_by_rank"):
            self._by_rank = {r: m for m, r in self.rank.items()}
        return self._by_rank[rank]

    def encode(self, text):
        ids = []
        for piece in self.pattern.findall(self.clean(text)):
            ids += [self.id[s] for s in self.bpe(piece)]
        return ids

    def tokenize(self, text, context=CONTEXT):
        """open_clip's tokenize for one text: (ids without padding, length before truncation)."""
        ids = [self.sot] + self.encode(text) + [self.eot]
        full = len(ids)
        if full > context:
            ids = ids[:context]
            ids[-1] = self.eot
        return ids, full


def test_texts(data):
    cats = json.load(open(os.path.join(data, "coco", "panoptic_coco_categories.json")))
    names = [c["name"] for c in sorted(cats, key=lambda c: c["id"])]
    templates = [l for l in open(os.path.join(data, "clip", "openai_imagenet_templates_80.txt"),
                                 encoding="utf-8").read().split("\n") if l.strip()]
    texts = ["a photo of a cat.", "This is a photo of a traffic light.", "wall-other-merged",
             "A  Photo   OF a DOG!!"]
    texts += names
    texts += [t.format(n) for t in templates for n in ("cat", "wall-other-merged", "traffic light",
                                                        "hair drier", "Éclair")]
    texts += [
        "Café crème brûlée", "naïve façade", "Straße", "ΟΔΟΣ ΣΟΦΟΣ", "Σ", "İstanbul",
        "ǅemal", "Ⅻ o'clock", "Ⓐ circled", "東京タワー", "日本語のテキスト", "北京烤鸭",
        "한국어 텍스트", "مرحبا بالعالم", "नमस्ते दुनिया", "ภาษาไทย", "Привет, мир!",
        "🐱 cat 😀", "👨‍👩‍👧 family", "🇫🇷 flag", "1234567890", "3.14159", "route 66",
        "2nd place", "½ cup", "٣ ३ ৩", "x²", "it's", "don't", "we're", "they've", "I'm",
        "you'll", "he'd", "IT'S", "DON'T", "rock'n'roll", "o'clock", "'s", "''", "'",
        "don’t", "it'ſ", "ﬁsh ﬂag", "ＡＢＣ１２３", "&amp; &lt;tag&gt;", "c++ e-mail @user #tag",
        "$100 50% a/b a_b", "!!!???...", "\ttabs\tand\nnewlines\n", "  leading and trailing  ",
        "no\u00a0break", "ideographic\u3000space", "line\u2028separator", "sep\x1cinside",
        "\x1c\x1dstripped\x1e\x1f", "\x0bvertical\x0c", "mixed \t\n\r\x0b\x0c\x85 runs",
        "<|startoftext|>hello<|endoftext|>", "<|ENDOFTEXT|>", "<|endoftext", "", "   ",
        "a", "A", ".", "supercalifragilisticexpialidocious",
        "pneumonoultramicroscopicsilicovolcanoconiosis", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "wall-other-merged floor-other-merged sky-other-merged",
    ]
    # over-long texts and the boundary: 74, 75, 76 words of one token each, plus start and end
    texts += ["a photo " * 50, "supercalifragilistic" * 20, " ".join(["cat"] * 74),
              " ".join(["cat"] * 75), " ".join(["cat"] * 76), "x" * 500]
    rng = random.Random(1234)
    pool = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"-_/()[]{}"
            "<|>@#$%^&*+=~`\t\n  àéîõüçñßÆØÅĳŒ İıΣσςΑΩЖжЯя中文字日本語한국ℕ①½²٣३"
            "🐱😀👍🏽\u200d\u00a0\u3000\u2028ſK\u0301\u0308ǅ\x1c")
    for _ in range(120):
        texts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 40))))
    return texts


def write_tokens(out, tok, data):
    texts = test_texts(data)
    path = os.path.join(out, "text_tokens.tsv")
    longest = 0
    with open(path, "w") as f:
        for t in texts:
            ids, full = tok.tokenize(t)
            longest = max(longest, full)
            f.write("%s\t%d\t%s\n" % (t.encode("utf-8").hex(), full, " ".join(map(str, ids))))
    # the examples, as the real tokenizer gives them
    want = {"a photo of a cat.": [49406, 320, 1125, 539, 320, 2368, 269, 49407],
            "This is a photo of a traffic light.":
                [49406, 589, 533, 320, 1125, 539, 320, 3399, 1395, 269, 49407],
            "wall-other-merged": [49406, 2569, 268, 1010, 268, 46492, 49407],
            "A  Photo   OF a DOG!!": [49406, 320, 1125, 539, 320, 1929, 748, 49407]}
    for t, ids in want.items():
        assert tok.tokenize(t)[0] == ids, (t, tok.tokenize(t)[0])
    assert longest > CONTEXT
    return path, len(texts)


# ---- the text transformer ------------------------------------------------------------------

class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    def __init__(self, width, heads, mlp, act):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, mlp)),
            ("gelu", QuickGELU() if act == "quickgelu" else nn.GELU()),
            ("c_proj", nn.Linear(mlp, width)),
        ]))

    def forward(self, x, mask):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    def __init__(self, width, layers, heads, mlp, embed, vocab, context, act, **_):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.empty(context, width))
        self.resblocks = nn.ModuleList([Block(width, heads, mlp, act) for _ in range(layers)])
        self.ln_final = nn.LayerNorm(width, eps=1e-5)
        self.text_projection = nn.Parameter(torch.empty(width, embed))
        self.register_buffer("mask", torch.full((context, context), float("-inf")).triu(1))

    def forward(self, tokens):
        x = self.token_embedding(tokens) + self.positional_embedding
        for blk in self.resblocks:
            x = blk(x, self.mask)
        x = self.ln_final(x)
        pool = tokens.argmax(dim=-1)
        return x[torch.arange(x.shape[0]), pool] @ self.text_projection, pool

    def named(self):
        """(open_clip name, tensor) in open_clip's order."""
        out = [("token_embedding.weight", self.token_embedding.weight),
               ("positional_embedding", self.positional_embedding)]
        for i, blk in enumerate(self.resblocks):
            for n, t in blk.named_parameters():
                out.append(("transformer.resblocks.%d.%s" % (i, n), t))
        out += [("ln_final.weight", self.ln_final.weight), ("ln_final.bias", self.ln_final.bias),
                ("text_projection", self.text_projection)]
        return out


def build_text(cfg, seed):
    torch.manual_seed(seed)
    m = TextTransformer(**cfg)
    c, L = cfg["width"], cfg["layers"]
    with torch.no_grad():
        for name, t in m.named():
            if name.endswith("bias"):
                t.normal_(0.0, 0.02)
            elif ".ln_" in name or name.startswith("ln_"):
                t.copy_(1.0 + 0.1 * torch.randn_like(t))
            elif name == "token_embedding.weight":
                t.normal_(0.0, 0.5)
            elif name == "positional_embedding":
                t.normal_(0.0, 0.1)
            elif name.endswith("in_proj_weight"):
                t.normal_(0.0, c ** -0.5)
            elif name.endswith("c_fc.weight"):
                t.normal_(0.0, (2 * c) ** -0.5)
            elif name.endswith("out_proj.weight") or name.endswith("c_proj.weight"):
                t.normal_(0.0, c ** -0.5 * (2 * L) ** -0.5)
            elif name == "text_projection":
                t.normal_(0.0, c ** -0.5)
            else:
                raise ValueError("no initialisation for " + name)
    return m


def hf_names(named, width):
    out = []
    for n, t in named:
        if n == "token_embedding.weight":
            out.append(("text_model.embeddings.token_embedding.weight", t))
        elif n == "positional_embedding":
            out.append(("text_model.embeddings.position_embedding.weight", t))
        elif n.startswith("ln_final."):
            out.append(("text_model.final_layer_norm." + n.split(".")[1], t))
        elif n == "text_projection":
            out.append(("text_projection.weight", t.T))
        else:
            _, _, i, rest = n.split(".", 3)
            h = "text_model.encoder.layers.%s." % i
            simple = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1",
                      "mlp.c_proj": "mlp.fc2", "attn.out_proj": "self_attn.out_proj"}
            if rest.startswith("attn.in_proj_"):
                kind = rest.split("_")[-1]
                for j, q in enumerate("qkv"):
                    out.append((h + "self_attn.%s_proj.%s" % (q, kind),
                                t[j * width:(j + 1) * width]))
            else:
                mod, kind = rest.rsplit(".", 1)
                out.append((h + simple[mod] + "." + kind, t))
    return out


def metadata(cfg):
    if not cfg["meta"]:
        return {}
    return {"clipself.text_heads": str(cfg["heads"]), "clipself.act": cfg["act"]}


def token_rows(cfg, g):
    """Rows with the highest id at various positions; zeros or junk after it."""
    B, V, T = cfg["batch"], cfg["vocab"], cfg["context"]
    rows = torch.randint(1, V - 1, (B, T), generator=g)
    ends = [T - 1, 1, T // 2, 3, T - 2, 5][:B]
    for b, p in enumerate(ends):
        rows[b, p] = V - 1
        if b % 2 == 0:
            rows[b, p + 1:] = 0          # padding, as tokenize gives
    if B > 2:
        rows[2, 1] = V - 1               # the highest id twice: the first one pools
    return rows.to(torch.int32)


def write_tower(f, out, name, cfg, seed, g, extra_named=(), extra_meta=None, tokens=None):
    model = build_text(cfg, seed)
    named = model.named()
    meta = metadata(cfg)
    meta.update(extra_meta or {})
    scale = [("logit_scale", torch.tensor(math.log(1 / 0.07)))]
    files = []
    path = os.path.join(out, "%s.safetensors" % name if name == "textvis"
                        else "text_%s.openclip.safetensors" % name)
    vit_ref.st_write(path, vit_ref.st_entries(named + scale + list(extra_named)), meta)
    files.append(path)
    if name == "tiny":
        files.append(os.path.join(out, "text_tiny.eva.safetensors"))
        vit_ref.st_write(files[-1], vit_ref.st_entries([("text." + n, t) for n, t in named] +
                                                       scale), meta)
        files.append(os.path.join(out, "text_tiny.eva_noact.safetensors"))
        vit_ref.st_write(files[-1], vit_ref.st_entries([("text." + n, t) for n, t in named] +
                                                       scale),
                         {"clipself.text_heads": meta["clipself.text_heads"]})
        files.append(os.path.join(out, "text_tiny.hf.safetensors"))
        pos_ids = ("text_model.embeddings.position_ids", "I64", (1, cfg["context"]),
                   vit_ref.st_bytes(torch.arange(cfg["context"]).reshape(1, -1), "I64"))
        vit_ref.st_write(files[-1], vit_ref.st_entries(hf_names(named, cfg["width"]) + scale) +
                         [pos_ids], meta)
    if tokens is None:
        tokens = token_rows(cfg, g)
    with torch.no_grad():
        emb, pool = model(tokens.long())
    grp = f.create_group(name)
    for k in ("width", "layers", "heads", "mlp", "embed", "vocab", "context"):
        grp.attrs[k] = np.int64(cfg[k])
    grp.attrs["act"] = np.bytes_(cfg["act"])
    grp.create_dataset("tokens", data=tokens.numpy().astype(np.int32))
    grp.create_dataset("pool", data=pool.numpy().astype(np.int32))
    grp.create_dataset("out", data=emb.numpy())
    assert torch.isfinite(emb).all() and emb.abs().max() > 0
    return model, files, path


def write_bad(out, tiny_path, cfg):
    st, meta = vit_ref.st_read(tiny_path)
    ents = [(n, d, tuple(s), r) for n, (d, s, r) in st.items()]
    c, e = cfg["width"], cfg["embed"]
    bad = {
        "text_bad_missing": [x for x in ents if x[0] != "ln_final.bias"],
        "text_bad_shape": [(n, d, (e, c) if n == "text_projection" else s, r)
                           for n, d, s, r in ents],
        "text_bad_unexpected": ents + [("transformer.resblocks.0.attn.extra_weight", "F32", (c,),
                                        vit_ref.st_bytes(torch.ones(c), "F32"))],
    }
    files = []
    for name, be in bad.items():
        files.append(os.path.join(out, name + ".safetensors"))
        vit_ref.st_write(files[-1], be, meta)
    data = open(tiny_path, "rb").read()
    files.append(os.path.join(out, "text_bad_truncated.safetensors"))
    open(files[-1], "wb").write(data[:-100])
    vis = vit_ref.build_model(vit_ref.CONFIGS["tiny"], seed=99)
    files.append(os.path.join(out, "text_bad_none.safetensors"))
    vit_ref.st_write(files[-1], vit_ref.st_entries(vit_ref.visual_params(vis)),
                     {"clipself.heads": "4", "clipself.act": "gelu"})
    return files


def write_fixtures(out, data):
    torch.set_num_threads(2)
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    tok = Tokenizer(os.path.join(data, "clip", "bpe_simple_vocab_16e6.txt.gz"))
    tsv, ntexts = write_tokens(out, tok, data)
    files = [tsv]
    g = torch.Generator().manual_seed(5)
    h5 = os.path.join(out, "text.h5")
    with h5py.File(h5, "w") as f:
        _, fl, tiny_path = write_tower(f, out, "tiny", CONFIGS["tiny"], 11, g)
        files += fl
        _, fl, _ = write_tower(f, out, "small", CONFIGS["small"], 12, g)
        files += fl
        # one file, both towers: vit_ref's tiny vision tower (embed 32) beside a text tower
        vcfg = vit_ref.CONFIGS["tiny"]
        vis = vit_ref.build_model(vcfg, seed=13)
        prompts = ["This is a photo of a traffic light.", "a photo of a cat.",
                   "wall-other-merged", "a photo " * 50]
        rows = torch.zeros(len(prompts), CONTEXT, dtype=torch.int32)
        for i, p in enumerate(prompts):
            ids, _ = tok.tokenize(p)
            rows[i, :len(ids)] = torch.tensor(ids)
        _, fl, _ = write_tower(f, out, "textvis", CONFIGS["textvis"], 14, g,
                               extra_named=vit_ref.visual_params(vis),
                               extra_meta={"clipself.heads": str(vcfg["heads"]),
                                           "clipself.act": vcfg["act"],
                                           "clipself.ln_eps": str(vcfg["ln_eps"]),
                                           "clipself.text_act": "quickgelu"},
                               tokens=rows)
        files += fl
    files.append(h5)
    files += write_bad(out, tiny_path, CONFIGS["tiny"])
    print("text_ref: %d tokenizer texts, %d files (%.1f s)" % (ntexts, len(files),
                                                              time.time() - t0))


# ---- class embeddings (the check of embed_text) ----------------------------------------------

def st_tensor(st, name):
    dtype, shape, raw = st[name]
    assert dtype == "F32", (name, dtype)
    return torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy()).reshape(shape)


def load_openclip_text(path):
    st, meta = vit_ref.st_read(path)
    width = st["token_embedding.weight"][1][1]
    vocab = st["token_embedding.weight"][1][0]
    context = st["positional_embedding"][1][0]
    embed = st["text_projection"][1][1]
    layers = 1 + max(int(n.split(".")[2]) for n in st if n.startswith("transformer.resblocks."))
    mlp = st["transformer.resblocks.0.mlp.c_fc.weight"][1][0]
    heads = int(meta.get("clipself.text_heads", width // 64))
    act = meta.get("clipself.text_act", meta.get("clipself.act", "quickgelu"))
    m = TextTransformer(width, layers, heads, mlp, embed, vocab, context, act)
    with torch.no_grad():
        for n, t in m.named():
            t.copy_(st_tensor(st, n))
    return m


def article(name):
    return "an" if name[0] in "aeiou" else "a"


def processed_name(name):
    return name.replace("_", " ").replace("/", " or ").lower().rstrip(".")


def class_embeddings(model, tok, names, templates, this_is):
    out = []
    with torch.no_grad():
        for name in names:
            texts = [t.format(processed_name(name), article=article(name)) for t in templates]
            if this_is:
                texts = ["This is " + t if t.startswith("a") or t.startswith("the") else t
                         for t in texts]
            rows = torch.zeros(len(texts), model.positional_embedding.shape[0], dtype=torch.long)
            for i, t in enumerate(texts):
                ids, _ = tok.tokenize(t, rows.shape[1])
                rows[i, :len(ids)] = torch.tensor(ids)
            emb = F.normalize(model(rows)[0], dim=-1).mean(dim=0)
            out.append(F.normalize(emb, dim=0))
    return torch.stack(out)


def embed_main(argv):
    ap = argparse.ArgumentParser(prog="text_ref.py embed")
    ap.add_argument("--model", required=True)
    ap.add_argument("--categories", required=True, help="COCO JSON (list or with categories) "
                    "or a text file, one name per line")
    ap.add_argument("--templates", default=None)
    ap.add_argument("--plain-prompts", action="store_true")
    ap.add_argument("--bpe", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    raw = open(a.categories, encoding="utf-8").read()
    if raw.lstrip()[:1] in ("[", "{"):
        cats = json.loads(raw)
        cats = cats["categories"] if isinstance(cats, dict) else cats
        names = [c["name"] for c in sorted(cats, key=lambda c: c["id"])]
    else:
        names = [l.strip() for l in raw.split("\n") if l.strip()]
    if a.templates:
        templates = [l.strip() for l in open(a.templates, encoding="utf-8").read().split("\n")
                     if l.strip()]
    else:
        templates = ["a photo of {article} {}."]
    emb = class_embeddings(load_openclip_text(a.model), Tokenizer(a.bpe), names, templates,
                           not a.plain_prompts)
    np.save(a.out, emb.numpy())


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "embed":
        return embed_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", required=True, help="the repository's data folder (clip/, coco/)")
    a = ap.parse_args()
    write_fixtures(a.out, a.data)


if __name__ == "__main__":
    main()
