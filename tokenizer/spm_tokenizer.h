/* SentencePiece backend (tokenizer.model files): a C API over the SentencePiece
 * C++ library. Only tokenizer/tokenizer.c uses it; the rest of the project sees
 * tokenizer/tokenizer.h. No function throws or aborts: failures come back as
 * NULL / -1 with a one-line reason in err. */
#ifndef MIXATTN_SPM_TOKENIZER_H
#define MIXATTN_SPM_TOKENIZER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct SpmTokenizer SpmTokenizer;

SpmTokenizer *spm_from_bytes(const void *data, size_t nbytes, char *err, size_t errlen);
SpmTokenizer *spm_from_file(const char *path, char *err, size_t errlen);
void spm_free(SpmTokenizer *t);

int spm_vocab_size(const SpmTokenizer *t);
int spm_bos_id(const SpmTokenizer *t); /* -1 if none */
int spm_eos_id(const SpmTokenizer *t);
int spm_unk_id(const SpmTokenizer *t);
const char *spm_piece(const SpmTokenizer *t, int id);        /* "" if out of range */
int spm_piece_to_id(const SpmTokenizer *t, const char *piece); /* -1 if not a piece */

/* text[0..len) (UTF-8); prepends BOS if add_bos and the model has one. */
int spm_encode(const SpmTokenizer *t, const char *text, size_t len, int add_bos, int **ids,
               int *n_ids, char *err, size_t errlen);

/* One id of a stream; *at_start starts at 1 (see tokenizer.h for the rules). */
int spm_stream_next(const SpmTokenizer *t, int *at_start, int id, char *out, int outcap);

char *spm_decode(const SpmTokenizer *t, const int *ids, int n_ids);
char *spm_decode_len(const SpmTokenizer *t, const int *ids, int n_ids, size_t *len);

#ifdef __cplusplus
}
#endif

#endif /* MIXATTN_SPM_TOKENIZER_H */
