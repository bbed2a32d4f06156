/* Tokenizer: a small C API over the SentencePiece C++ library.
 *
 * The implementation (tokenizer.cpp) is C++; this header is plain C and is all
 * the rest of the project sees. No function throws or aborts: failures come
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

/* Load a serialized SentencePiece ModelProto (e.g. the blob embedded in a
 * checkpoint) or a .model file. NULL on failure. */
Tokenizer *tokenizer_from_bytes(const void *data, size_t nbytes, char *err, size_t errlen);
Tokenizer *tokenizer_from_file(const char *path, char *err, size_t errlen);
void tokenizer_free(Tokenizer *t); /* NULL is fine */

int tokenizer_vocab_size(const Tokenizer *t);
int tokenizer_bos_id(const Tokenizer *t); /* -1 if none */
int tokenizer_eos_id(const Tokenizer *t); /* -1 if none */
int tokenizer_unk_id(const Tokenizer *t); /* -1 if none */

/* The raw vocabulary piece of id (e.g. "\xe2\x96\x81Once", "<0x0A>", "<s>"),
 * owned by t; "" if id is out of range. For debugging and tools. */
const char *tokenizer_piece(const Tokenizer *t, int id);

/* Encode UTF-8 text. If add_bos (and the model has a BOS), prepend BOS.
 * On success returns 0, *ids is malloc'd (caller frees; non-NULL even when
 * *n_ids is 0), *n_ids set. Returns -1 on failure (and writes err). */
int tokenizer_encode(const Tokenizer *t, const char *text, int add_bos, int **ids, int *n_ids,
                     char *err, size_t errlen);

/* Streaming decode: decode tokens one at a time as they are generated.
 * The concatenated outputs equal tokenizer_decode() of the whole sequence,
 * byte for byte, for every id sequence whose byte-fallback runs are valid
 * UTF-8 (which includes everything tokenizer_encode produces). A run of
 * <0xNN> pieces that is not valid UTF-8 is written here as the raw bytes,
 * whereas SentencePiece writes U+FFFD for each bad byte. */
typedef struct {
    int at_start; /* SentencePiece would still drop a leading U+2581 here */
} TokenStream;

void token_stream_init(TokenStream *s);

/* Writes the bytes that token id contributes to the text into out and returns
 * their count; out is always NUL-terminated (outcap >= 64 holds any piece of
 * a standard model; longer ones are truncated, never overflowed).
 * Control tokens (BOS/EOS) contribute nothing; <unk> contributes the model's
 * unk surface (" \xe2\x81\x87 " by default) exactly as SentencePiece decodes it;
 * <0xNN> contributes the single raw byte; U+2581 becomes a space, and the
 * leading space of the first piece of a stream is dropped exactly as
 * SentencePiece's DecodeIds drops it. Out-of-range id -> 0 bytes. */
int token_stream_next(const Tokenizer *t, TokenStream *s, int id, char *out, int outcap);

/* Whole-sequence decode through SentencePiece itself (for tests and tools).
 * malloc'd NUL-terminated string, or NULL on failure (e.g. an id out of range). */
char *tokenizer_decode(const Tokenizer *t, const int *ids, int n_ids);
/* The same, also giving the byte length: the text can hold NUL bytes (the
 * <0x00> piece), which the plain C-string view above would cut short.
 * len may be NULL. */
char *tokenizer_decode_len(const Tokenizer *t, const int *ids, int n_ids, size_t *len);

#ifdef __cplusplus
}
#endif

#endif /* MIXATTN_TOKENIZER_H */
