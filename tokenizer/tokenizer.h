/* Tokenizer: one C API over both kinds the runtime reads.
 *
 *   - SentencePiece `tokenizer.model` (tokenizer/spm_tokenizer.cpp, over libsentencepiece);
 *   - Hugging Face `tokenizer.json` (tokenizer/hf_tokenizer.c: BPE, byte-level or
 *     SentencePiece-style), with its tokenizer_config.json (BOS/EOS handling).
 *
 * run.c sees only this header. No function throws or aborts: failures come
 * back as NULL / -1 with a one-line reason in err (errlen bytes, always
 * NUL-terminated; err may be NULL or errlen 0 to ignore the reason).
 */
#ifndef MIXATTN_TOKENIZER_H
#define MIXATTN_TOKENIZER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Tokenizer Tokenizer;

/* The kinds, as stored in the checkpoint header (docs/FORMAT.md, tokenizer_kind). */
enum { TOKENIZER_NONE = 0, TOKENIZER_SPM = 1, TOKENIZER_HF = 2 };

/* Load a serialized SentencePiece ModelProto (e.g. the blob embedded in a
 * checkpoint). NULL on failure. */
Tokenizer *tokenizer_from_bytes(const void *data, size_t nbytes, char *err, size_t errlen);
/* A tokenizer of the given kind from its bytes (a .model, or a tokenizer.json
 * text) and an optional config blob (docs/FORMAT.md, "tokenizer-config blob";
 * NULL/0 for none). */
Tokenizer *tokenizer_from_blob(int kind, const void *data, size_t nbytes, const void *config,
                               size_t config_bytes, char *err, size_t errlen);
/* A file: a SentencePiece .model, or a tokenizer.json (then tokenizer_config.json
 * and generation_config.json are read from the same folder when present). */
Tokenizer *tokenizer_from_file(const char *path, char *err, size_t errlen);
void tokenizer_free(Tokenizer *t); /* NULL is fine */

int tokenizer_kind(const Tokenizer *t);

int tokenizer_vocab_size(const Tokenizer *t);
int tokenizer_bos_id(const Tokenizer *t); /* -1 if none */
int tokenizer_eos_id(const Tokenizer *t); /* -1 if none */
int tokenizer_unk_id(const Tokenizer *t); /* -1 if none */
/* Every id that ends generation: the EOS, the eos_token_id list of
 * generation_config.json and the config's eos_token (no duplicates). */
const int *tokenizer_end_ids(const Tokenizer *t, int *n);
int tokenizer_is_end(const Tokenizer *t, int id);
/* Will tokenizer_encode(add_special=1) prepend BOS? (add_bos_token, else the
 * post-processor; SentencePiece: when the model has a BOS.) */
int tokenizer_adds_bos(const Tokenizer *t);
/* A record of the config blob (e.g. a compiled chat template), or NULL. */
const void *tokenizer_config_record(const Tokenizer *t, const char *key, size_t *len);

/* The raw vocabulary piece of id (e.g. "\xe2\x96\x81Once", "<0x0A>", "<s>"),
 * owned by t; "" if id is out of range. For debugging and tools. */
const char *tokenizer_piece(const Tokenizer *t, int id);
int tokenizer_piece_to_id(const Tokenizer *t, const char *piece); /* -1 if none */

/* Encode UTF-8 text (invalid UTF-8 is an error). add_special = Hugging Face's
 * add_special_tokens: BOS/EOS as the tokenizer's config says (add_bos_token /
 * add_eos_token, else the post-processor; SentencePiece: BOS if it has one);
 * 0 adds nothing. Literal special tokens in the text (e.g. "<|eot_id|>") are
 * their ids for tokenizer.json. On success returns 0, *ids is malloc'd (caller
 * frees; non-NULL even when *n_ids is 0), *n_ids set. Returns -1 on failure
 * (and writes err). The tokenizer's piece cache is updated (not thread-safe). */
int tokenizer_encode(const Tokenizer *t, const char *text, int add_special, int **ids, int *n_ids,
                     char *err, size_t errlen);
/* The same for text[0..len), which may hold NUL bytes. */
int tokenizer_encode_len(const Tokenizer *t, const char *text, size_t len, int add_special,
                         int **ids, int *n_ids, char *err, size_t errlen);

/* Streaming decode: decode tokens one at a time as they are generated.
 * The concatenated outputs equal tokenizer_decode() of the whole sequence,
 * byte for byte, for every id sequence whose byte-fallback runs are valid
 * UTF-8 (which includes everything tokenizer_encode produces). A run of
 * <0xNN> pieces that is not valid UTF-8 is written here as the raw bytes,
 * whereas SentencePiece writes U+FFFD for each bad byte. */
typedef struct {
    int at_start;   /* SentencePiece would still drop a leading U+2581 here */
    int strip_left; /* tokenizer.json: leading Strip characters still to drop */
    int started;    /* tokenizer.json without a decoder: a token was written */
} TokenStream;

void token_stream_init(TokenStream *s); /* call once per stream, before the first id */

/* Writes the bytes that token id contributes to the text into out and returns
 * their count; out is always NUL-terminated (outcap >= 64 holds any piece of
 * a standard model; longer ones are truncated, never overflowed).
 * Control tokens (BOS/EOS) contribute nothing; <unk> contributes the model's
 * unk surface (" \xe2\x81\x87 " by default) exactly as SentencePiece decodes it;
 * <0xNN> contributes the single raw byte; U+2581 becomes a space, and the
 * leading space of the first piece of a stream is dropped exactly as
 * SentencePiece's DecodeIds drops it. Out-of-range id -> 0 bytes. */
int token_stream_next(const Tokenizer *t, TokenStream *s, int id, char *out, int outcap);
/* tokenizer.json: the same stream rules come from the decoder (ByteLevel,
 * Replace/ByteFallback/Fuse/Strip, Metaspace); special added tokens (BOS,
 * <|eot_id|>, ...) write nothing, as decode(skip_special_tokens=True). */

/* Whole-sequence decode through SentencePiece itself (for tests and tools).
 * malloc'd NUL-terminated string, or NULL on failure (e.g. an id out of range). */
char *tokenizer_decode(const Tokenizer *t, const int *ids, int n_ids);
/* The same, also giving the byte length: the text can hold NUL bytes (the
 * <0x00> piece), which the plain C-string view above would cut short.
 * len may be NULL. */
char *tokenizer_decode_len(const Tokenizer *t, const int *ids, int n_ids, size_t *len);
/* tokenizer.json: HF decode(ids, skip_special_tokens), invalid UTF-8 replaced by
 * U+FFFD; (SentencePiece ignores skip_special: its Decode drops control pieces). */
char *tokenizer_decode_ex(const Tokenizer *t, const int *ids, int n_ids, int skip_special, size_t *len);
/* Does the config set clean_up_tokenization_spaces (transformers' decode then applies
 * tokenizer_clean_up_spaces; absent means false, as in transformers since 4.45)? */
int tokenizer_cleans_up_spaces(const Tokenizer *t);
/* transformers' clean_up_tokenization on text[0..len), in place (" ." -> ".", " n't" ->
 * "n't", ...); returns the new length and NUL-terminates (text needs len + 1 bytes). */
size_t tokenizer_clean_up_spaces(char *text, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* MIXATTN_TOKENIZER_H */
