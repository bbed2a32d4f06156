/* Hugging Face tokenizer.json backend: the BPE model with its normalizer,
 * pre-tokenizer, added tokens, post-processor and decoder, in C.
 *
 * Only tokenizer/tokenizer.c uses it; the rest of the project sees
 * tokenizer/tokenizer.h. What is supported, and why PCRE2/utf8proc/cJSON:
 * docs/TOKENIZER.md. Every failure is NULL / -1 with a one-line reason in err.
 */
#ifndef MIXATTN_HF_TOKENIZER_H
#define MIXATTN_HF_TOKENIZER_H

#include <stddef.h>

typedef struct HfTokenizer HfTokenizer;

/* Parses tokenizer.json (json[0..len), need not be NUL-terminated). */
HfTokenizer *hf_tokenizer_load(const char *json, size_t len, char *err, size_t errlen);
void hf_tokenizer_free(HfTokenizer *t); /* NULL is fine */

/* Highest id + 1 over the model vocabulary and the added tokens. */
int hf_vocab_size(const HfTokenizer *t);
/* The token string of id as stored in tokenizer.json ("" if there is none). */
const char *hf_piece(const HfTokenizer *t, int id);
/* id of a token string (vocabulary or added token); -1 if unknown. */
int hf_piece_to_id(const HfTokenizer *t, const char *piece);
int hf_is_special(const HfTokenizer *t, int id); /* an added token with special: true */

/* The ids the post-processor puts around a single sequence when
 * add_special_tokens is true (e.g. TemplateProcessing "<s> $A"). */
void hf_post_processor(const HfTokenizer *t, const int **prefix, int *n_prefix,
                       const int **suffix, int *n_suffix);

/* HF encode(text, add_special_tokens=False) of text[0..len), which must be
 * valid UTF-8. Appends to *ids (malloc'd, grown with realloc; *n ids, *cap
 * capacity). The tokenizer's piece cache is updated, hence non-const.
 * Returns 0, or -1 with err set. */
int hf_encode(HfTokenizer *t, const char *text, size_t len, int **ids, int *n, int *cap,
              char *err, size_t errlen);

/* Streaming decode: the bytes id contributes in the middle of a stream (the
 * decoder's per-token steps already applied; *len bytes, not NUL-terminated);
 * NULL for an id out of range. */
const char *hf_token_bytes(const HfTokenizer *t, int id, size_t *len);
/* After the decoder's Fuse, Strip(content, start, stop) applies to the whole
 * text: up to start leading and stop trailing copies of *strip_char
 * (strip_char[0..*strip_len), one UTF-8 character). */
void hf_stream_strip(const HfTokenizer *t, const char **strip_char, size_t *strip_len,
                     int *start, int *stop);
/* The decoder is null: HF joins the tokens with one space. */
int hf_join_with_space(const HfTokenizer *t);

#endif /* MIXATTN_HF_TOKENIZER_H */
