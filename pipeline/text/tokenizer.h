/* tokenizer.h: the CLIP BPE tokenizer (OpenAI's simple_tokenizer, as open_clip uses it).
 *
 * Byte-level BPE over the merges of bpe_simple_vocab_16e6.txt.gz: merges = lines
 * [1, 49152-256-2+1) of the file; the vocabulary is the 256 byte characters, each of them with
 * "</w>" appended, each merge joined, then <|startoftext|> (49406) and <|endoftext|> (49407).
 *
 * A text is cleaned and split as the reference does, in this order:
 *   1. strip leading and trailing white space (Python's str.strip: Unicode White_Space and
 *      U+001C..U+001F),
 *   2. every run of \s collapsed to one space, strip again,
 *   3. Unicode lower-casing (Python's str.lower: full case mapping, final sigma),
 *   4. split by CLIP's pattern, case-insensitive:
 *      <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 *      (characters no alternative matches, white space, are dropped),
 *   5. each piece's UTF-8 bytes -> byte characters -> BPE merges in rank order -> ids.
 * Unicode properties, white space, lower-casing and the pattern come from ICU, whose answers
 * agree with Python's str.lower and the regex module on every code point but one (U+0345
 * COMBINING GREEK YPOGEGRAMMENI: ICU's case-insensitive [\p{L}] takes it, Python's drops it).
 *
 * NOT reproduced: the reference's basic_clean runs ftfy.fix_text and html.unescape twice
 * before step 1 (ftfy is not packaged for Debian 12). Texts they would change tokenise
 * differently here: HTML entities ("&amp;" stays as written), curly quotes (ftfy makes
 * "don’t" "don't"), ligatures ("ﬁ"), full-width forms, mojibake, and text that is not in
 * NFC. Class names and prompt templates are plain text and meet none of these.
 *
 * Context: the start token, the BPE ids and the end token, padded with zeros to ctx (77 for
 * every CLIP). A longer text is TRUNCATED as open_clip's tokenize() does (OpenAI's clip.tokenize
 * refuses instead, unless truncate=True): the first ctx - 1 ids are kept and the end token
 * put last. tokenizer_encode reports the untruncated length, so the caller can name the text.
 *
 * A Tokenizer is not thread-safe (its pattern matchers and its cache are shared state): use
 * one per thread. */
#ifndef CLIPSELF_TOKENIZER_H
#define CLIPSELF_TOKENIZER_H

#define TOKENIZER_CONTEXT 77  /* open_clip's context_length */
#define TOKENIZER_VOCAB 49408
#define TOKENIZER_SOT 49406   /* <|startoftext|> */
#define TOKENIZER_EOT 49407   /* <|endoftext|> */

typedef struct Tokenizer Tokenizer;

/* Read the gzip-compressed merges file (bpe_simple_vocab_16e6.txt.gz). A missing, truncated
 * or malformed file (fewer merge lines than needed, a line that is not two symbols, a symbol
 * not built by earlier merges) is an error naming the file and the line. */
int tokenizer_load(Tokenizer **out, const char *bpe_path);
void tokenizer_free(Tokenizer *tk);

/* ids (ctx) = the tokens of text (UTF-8) with start and end tokens, zero-padded; *len gets the
 * number of tokens before the padding (<= ctx) and *full_len the number the text has with its
 * start and end tokens (> ctx: the text was truncated). ctx >= 2. Text that is not valid UTF-8
 * is an error. */
int tokenizer_encode(Tokenizer *tk, const char *text, int ctx, int *ids, int *len,
                     int *full_len);

#endif
