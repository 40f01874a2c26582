"""contrastive_ref.py: the PyTorch reference of method/contrastive.h; writes contrastive.h5.

Usage: /usr/bin/python3 tests/reference/contrastive_ref.py --out DIR

The loss of pretrain_teacher written the way open_clip writes CLIP's: F.normalize both sides,
logits = logit_scale.exp() * img_n @ cls_n.T, F.cross_entropy with probability targets (mean
over rows). float32, seeded, 2 threads. Gradients are torch autograd of the loss (dloss = 1).

  /<case>         attrs N, K, E; img (N, E), cls (K, E), log_scale (1), target (N, K),
                  loss (1), dimg (N, E), dcls (K, E), dlog_scale (1)
  cases: "mixed"  rows one-hot (regions) and uniform over 2-4 classes (whole images), the
                  CLIP initial scale log(1/0.07), embeddings of assorted norms
         "sharp"  the scale at its clamp (log 100) and class embeddings close to the images,
                  so some rows are nearly saturated
"""
import argparse
import math
import os

import h5py
import torch
import torch.nn.functional as F


def loss_fn(img, cls, log_scale, target):
    img_n = F.normalize(img, dim=-1)
    cls_n = F.normalize(cls, dim=-1)
    logits = log_scale.exp() * img_n @ cls_n.t()
    return F.cross_entropy(logits, target)


def case(f, name, N, K, E, log_scale, sharp):
    img = torch.randn(N, E) * torch.empty(N, 1).uniform_(0.3, 3.0)
    cls = torch.randn(K, E) * torch.empty(K, 1).uniform_(0.5, 2.0)
    target = torch.zeros(N, K)
    labels = torch.randint(0, K, (N,))
    for i in range(N):
        if i % 3 == 2:  # a whole image: uniform over a few categories
            ks = torch.randperm(K)[: 2 + i % 3]
            target[i, ks] = 1.0 / len(ks)
        else:
            target[i, labels[i]] = 1.0
    if sharp:  # images near their class: confident rows
        img = cls[labels] * 2.0 + 0.3 * torch.randn(N, E)
    img.requires_grad_(True)
    cls.requires_grad_(True)
    ls = torch.tensor([log_scale], requires_grad=True)
    loss = loss_fn(img, cls, ls[0], target)
    dimg, dcls, dls = torch.autograd.grad(loss, (img, cls, ls))
    g = f.create_group(name)
    g.attrs["N"], g.attrs["K"], g.attrs["E"] = N, K, E
    for k, v in (("img", img), ("cls", cls), ("log_scale", ls), ("target", target),
                 ("loss", loss.reshape(1)), ("dimg", dimg), ("dcls", dcls), ("dlog_scale", dls)):
        g.create_dataset(k, data=v.detach().numpy().astype("float32"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    os.makedirs(a.out, exist_ok=True)
    with h5py.File(os.path.join(a.out, "contrastive.h5"), "w") as f:
        case(f, "mixed", 12, 17, 32, math.log(1 / 0.07), False)
        case(f, "sharp", 9, 7, 16, math.log(100.0), True)


if __name__ == "__main__":
    main()
