// The tokenizer API of tokenizer.h over its two backends (SentencePiece, tokenizer.json),
// plus what is the same for both: the config (BOS/EOS handling, end ids) read from
// tokenizer_config.json / generation_config.json or from a checkpoint's config blob,
// UTF-8 checks, and streaming decode.
#define _POSIX_C_SOURCE 200809L
#include "tokenizer/tokenizer.h"

#include "common/error.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>

#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/spm_tokenizer.h"

#define MAX_END_IDS 64

struct Tokenizer {
    int kind;
    SpmTokenizer *spm;
    HfTokenizer *hf;
    int bos, eos, unk, vocab_size;
    int add_bos, add_eos;   // what add_special adds
    int clean_up_spaces;    // tokenizer_config.json clean_up_tokenization_spaces (absent: 0)
    int end_ids[MAX_END_IDS], n_end;
    unsigned char *config;  // the config blob (owned copy), for tokenizer_config_record
    size_t config_bytes;
};

// --- files ---------------------------------------------------------------------------

// Whole file, NUL-terminated; NULL (err set) on failure, or quietly if missing_ok and absent.
// Only a regular file of at most MAX_TOKENIZER_FILE bytes: a FIFO would block, /dev/zero
// never ends (issue 12); a file that grows past the cap while read is refused too.
#define MAX_TOKENIZER_FILE ((size_t)256 << 20)
static char *read_file(const char *path, size_t *n, int missing_ok, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st) != 0) {
        if (!(missing_ok && errno == ENOENT)) fail(err, errlen, "tokenizer: cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) { fail(err, errlen, "tokenizer: %s is not a regular file", path); return NULL; }
    if ((uint64_t)st.st_size > MAX_TOKENIZER_FILE) {
        fail(err, errlen, "tokenizer: %s is %lld bytes, more than the %zu a tokenizer may have", path,
             (long long)st.st_size, MAX_TOKENIZER_FILE);
        return NULL;
    }
    const int fd = open(path, O_RDONLY | O_NONBLOCK); // a FIFO swapped in since stat() never blocks
    FILE *f = fd < 0 ? NULL : fdopen(fd, "rb");
    if (!f) {
        fail(err, errlen, "tokenizer: cannot open %s: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return NULL;
    }
    char *buf = NULL;
    size_t cap = 0, len = 0, got;
    for (;;) {
        if (len > MAX_TOKENIZER_FILE) {
            free(buf);
            fclose(f);
            fail(err, errlen, "tokenizer: %s grew past %zu bytes while read", path, MAX_TOKENIZER_FILE);
            return NULL;
        }
        if (len + 1 >= cap) {
            const size_t nc = cap ? 2 * cap : 1 << 16;
            char *nb = realloc(buf, nc);
            if (!nb) { free(buf); fclose(f); fail(err, errlen, "tokenizer: out of memory reading %s", path); return NULL; }
            buf = nb, cap = nc;
        }
        got = fread(buf + len, 1, cap - len - 1, f);
        if (!got) break;
        len += got;
    }
    const int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); fail(err, errlen, "tokenizer: cannot read %s (is it a directory?)", path); return NULL; }
    buf[len] = '\0';
    *n = len;
    return buf;
}

// --- the config blob -------------------------------------------------------------------
// "TKCF", u32 version = 1, u32 count, then count x (u32 key_len, key, u32 value_len, value);
// little-endian, no padding (docs/FORMAT.md).

static uint32_t rd32(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

// 0 if the blob is well formed (*val = the value of key, or NULL if absent), else -1.
static int blob_find(const unsigned char *b, size_t n, const char *key, const void **val, size_t *len,
                     char *err, size_t errlen) {
    *val = NULL, *len = 0;
    if (n < 12 || memcmp(b, "TKCF", 4)) return fail(err, errlen, "tokenizer config blob: bad magic");
    if (rd32(b + 4) != 1) return fail(err, errlen, "tokenizer config blob: unknown version %u", rd32(b + 4));
    const uint32_t count = rd32(b + 8);
    size_t at = 12;
    for (uint32_t i = 0; i < count; i++) {
        if (n - at < 4 || n - at - 4 < (size_t)rd32(b + at) + 4) break;
        const uint32_t kl = rd32(b + at), vl = rd32(b + at + 4 + kl);
        if (n - at - 8 - kl < vl) break;
        if (key && !*val && kl == strlen(key) && !memcmp(b + at + 4, key, kl)) *val = b + at + 8 + kl, *len = vl;
        at += 8 + (size_t)kl + vl;
    }
    if (at != n) { *val = NULL; return fail(err, errlen, "tokenizer config blob: truncated or malformed records"); }
    return 0;
}

// --- the config: BOS/EOS handling and end ids ------------------------------------------

static const char *token_name(const cJSON *v) { // "..." or {"content": "..."}
    if (cJSON_IsString(v)) return v->valuestring;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

static void add_end(Tokenizer *t, int id) {
    if (id < 0 || id >= t->vocab_size) return;
    for (int i = 0; i < t->n_end; i++)
        if (t->end_ids[i] == id) return;
    if (t->n_end < MAX_END_IDS) t->end_ids[t->n_end++] = id;
}

// One JSON config (tokenizer_config.json, generation_config.json, or the digest
// stored in a checkpoint, which uses the same key names).
static int apply_config(Tokenizer *t, const char *json, size_t len, const char *what, char *err, size_t errlen) {
    cJSON *c = cJSON_ParseWithLength(json, len);
    if (!c || !cJSON_IsObject(c)) { cJSON_Delete(c); return fail(err, errlen, "%s: malformed JSON", what); }
    const cJSON *v;
    const char *name;
    if ((v = cJSON_GetObjectItemCaseSensitive(c, "bos_token"))) {
        if (cJSON_IsNull(v)) t->bos = -1;
        else if ((name = token_name(v)) && (t->bos = tokenizer_piece_to_id(t, name)) < 0) {
            fail(err, errlen, "%s: bos_token '%.60s' is not a token", what, name);
            cJSON_Delete(c);
            return -1;
        }
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(c, "eos_token"))) {
        if (cJSON_IsNull(v)) t->eos = -1;
        else if ((name = token_name(v)) && (t->eos = tokenizer_piece_to_id(t, name)) < 0) {
            fail(err, errlen, "%s: eos_token '%.60s' is not a token", what, name);
            cJSON_Delete(c);
            return -1;
        }
    }
    if (cJSON_IsBool(v = cJSON_GetObjectItemCaseSensitive(c, "add_bos_token"))) t->add_bos = cJSON_IsTrue(v);
    if (cJSON_IsBool(v = cJSON_GetObjectItemCaseSensitive(c, "add_eos_token"))) t->add_eos = cJSON_IsTrue(v);
    if (cJSON_IsBool(v = cJSON_GetObjectItemCaseSensitive(c, "clean_up_tokenization_spaces")))
        t->clean_up_spaces = cJSON_IsTrue(v);
    // generation_config.json: eos_token_id (an int or a list) ends generation too
    if ((v = cJSON_GetObjectItemCaseSensitive(c, "eos_token_id"))) {
        if (cJSON_IsNumber(v)) add_end(t, v->valueint);
        else if (cJSON_IsArray(v))
            for (const cJSON *e = v->child; e; e = e->next)
                if (cJSON_IsNumber(e)) add_end(t, e->valueint);
    }
    cJSON_Delete(c);
    return 0;
}

static int finish(Tokenizer *t, char *err, size_t errlen) {
    if (t->add_bos > 0 && t->bos < 0) t->add_bos = 0;
    if (t->add_eos > 0 && t->eos < 0) t->add_eos = 0;
    add_end(t, t->eos);
    (void)err, (void)errlen;
    return 0;
}

// --- loading ---------------------------------------------------------------------------

static Tokenizer *new_tok(int kind) {
    Tokenizer *t = calloc(1, sizeof *t);
    if (t) t->kind = kind, t->bos = t->eos = t->unk = -1, t->add_bos = t->add_eos = -1;
    return t;
}

static int init_spm(Tokenizer *t) {
    t->vocab_size = spm_vocab_size(t->spm);
    t->bos = spm_bos_id(t->spm), t->eos = spm_eos_id(t->spm), t->unk = spm_unk_id(t->spm);
    return 0;
}

static int init_hf(Tokenizer *t) {
    t->vocab_size = hf_vocab_size(t->hf);
    // defaults before any config: BOS/EOS as the post-processor adds them
    const int *pre, *suf;
    int np, nsuf;
    hf_post_processor(t->hf, &pre, &np, &suf, &nsuf);
    if (np == 1) t->bos = pre[0];
    if (nsuf == 1) t->eos = suf[0];
    return 0;
}

Tokenizer *tokenizer_from_blob(int kind, const void *data, size_t nbytes, const void *config, size_t config_bytes,
                               char *err, size_t errlen) {
    error_clear(err, errlen);
    if (kind != TOKENIZER_SPM && kind != TOKENIZER_HF) { fail(err, errlen, "tokenizer: unknown kind %d", kind); return NULL; }
    Tokenizer *t = new_tok(kind);
    if (!t) { fail(err, errlen, "tokenizer: out of memory"); return NULL; }
    if (kind == TOKENIZER_SPM) {
        if (!(t->spm = spm_from_bytes(data, nbytes, err, errlen))) goto fail;
        init_spm(t);
    } else {
        if (!(t->hf = hf_tokenizer_load(data, nbytes, err, errlen))) goto fail;
        init_hf(t);
    }
    if (config_bytes) {
        size_t len = 0;
        const void *val;
        if (blob_find(config, config_bytes, NULL, &val, &len, err, errlen)) goto fail;
        if (!(t->config = malloc(config_bytes))) { fail(err, errlen, "tokenizer: out of memory"); goto fail; }
        memcpy(t->config, config, config_bytes);
        t->config_bytes = config_bytes;
        const char *digest = tokenizer_config_record(t, "config.json", &len);
        if (digest && apply_config(t, digest, len, "tokenizer config blob (config.json)", err, errlen)) goto fail;
    }
    finish(t, err, errlen);
    return t;
fail:
    tokenizer_free(t);
    return NULL;
}

Tokenizer *tokenizer_from_bytes(const void *data, size_t nbytes, char *err, size_t errlen) {
    return tokenizer_from_blob(TOKENIZER_SPM, data, nbytes, NULL, 0, err, errlen);
}

static int ends_with(const char *s, const char *suffix) {
    const size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

Tokenizer *tokenizer_from_file(const char *path, char *err, size_t errlen) {
    error_clear(err, errlen);
    if (!path) { fail(err, errlen, "tokenizer: NULL path"); return NULL; }
    size_t n = 0;
    char *data = read_file(path, &n, 0, err, errlen);
    if (!data) return NULL;
    // tokenizer.json is JSON text (starts with '{'); anything else is tried as SentencePiece
    size_t k = 0;
    while (k < n && (data[k] == ' ' || data[k] == '\n' || data[k] == '\r' || data[k] == '\t')) k++;
    const int is_json = (k < n && data[k] == '{') || ends_with(path, ".json");
    Tokenizer *t = NULL;
    if (!is_json) {
        t = tokenizer_from_blob(TOKENIZER_SPM, data, n, NULL, 0, err, errlen);
        if (!t && err && errlen) {
            char *msg = strdup(err);
            if (msg) fail(err, errlen, "%s: %s", path, msg);
            free(msg);
        }
        free(data);
        return t;
    }
    t = tokenizer_from_blob(TOKENIZER_HF, data, n, NULL, 0, err, errlen);
    free(data);
    if (!t) {
        char *msg = err ? strdup(err) : NULL;
        if (msg) fail(err, errlen, "%s: %s", path, msg);
        free(msg);
        return NULL;
    }
    // tokenizer_config.json and generation_config.json beside it
    static const char *side[] = {"tokenizer_config.json", "generation_config.json"};
    const char *slash = strrchr(path, '/');
    const size_t dir = slash ? (size_t)(slash - path) + 1 : 0;
    for (int i = 0; i < 2; i++) {
        char *p = malloc(dir + strlen(side[i]) + 1);
        if (!p) { tokenizer_free(t); fail(err, errlen, "tokenizer: out of memory"); return NULL; }
        memcpy(p, path, dir);
        strcpy(p + dir, side[i]);
        size_t cn = 0;
        char *cfg = read_file(p, &cn, 1, err, errlen);
        const int failed = cfg ? apply_config(t, cfg, cn, p, err, errlen) : (err && err[0]);
        free(cfg), free(p);
        if (failed) { tokenizer_free(t); return NULL; }
    }
    finish(t, err, errlen);
    return t;
}

void tokenizer_free(Tokenizer *t) {
    if (!t) return;
    spm_free(t->spm);
    hf_tokenizer_free(t->hf);
    free(t->config);
    free(t);
}

// --- queries ---------------------------------------------------------------------------

int tokenizer_kind(const Tokenizer *t) { return t ? t->kind : TOKENIZER_NONE; }
int tokenizer_vocab_size(const Tokenizer *t) { return t ? t->vocab_size : 0; }
int tokenizer_bos_id(const Tokenizer *t) { return t ? t->bos : -1; }
int tokenizer_eos_id(const Tokenizer *t) { return t ? t->eos : -1; }
int tokenizer_unk_id(const Tokenizer *t) { return t ? t->unk : -1; }
const int *tokenizer_end_ids(const Tokenizer *t, int *n) {
    *n = t ? t->n_end : 0;
    return t ? t->end_ids : NULL;
}
int tokenizer_is_end(const Tokenizer *t, int id) {
    for (int i = 0; t && i < t->n_end; i++)
        if (t->end_ids[i] == id) return 1;
    return 0;
}
int tokenizer_adds_bos(const Tokenizer *t) {
    if (!t || t->bos < 0) return 0;
    if (t->add_bos >= 0) return t->add_bos;
    if (t->kind == TOKENIZER_SPM) return 1;
    const int *pre, *suf;
    int np, ns;
    hf_post_processor(t->hf, &pre, &np, &suf, &ns);
    return np > 0 && pre[0] == t->bos;
}
const void *tokenizer_config_record(const Tokenizer *t, const char *key, size_t *len) {
    size_t l = 0;
    const void *r = NULL;
    if (len) *len = 0;
    if (!t || !t->config || !key || blob_find(t->config, t->config_bytes, key, &r, &l, NULL, 0)) return NULL;
    if (len) *len = l;
    return r;
}
const char *tokenizer_piece(const Tokenizer *t, int id) {
    if (!t) return "";
    return t->kind == TOKENIZER_SPM ? spm_piece(t->spm, id) : hf_piece(t->hf, id);
}
int tokenizer_piece_to_id(const Tokenizer *t, const char *piece) {
    if (!t) return -1;
    return t->kind == TOKENIZER_SPM ? spm_piece_to_id(t->spm, piece) : hf_piece_to_id(t->hf, piece);
}

// --- encode ----------------------------------------------------------------------------

static int check_utf8(const char *s, size_t n, char *err, size_t errlen) {
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        const utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) return fail(err, errlen, "tokenizer: the text is not valid UTF-8 (at byte %zu)", i);
        i += (size_t)k;
    }
    return 0;
}

static int push_id(int **v, int *n, int *cap, int id) {
    if (*n >= *cap) {
        int *w = realloc(*v, sizeof(int) * (size_t)*cap * 2);
        if (!w) return -1;
        *v = w, *cap *= 2;
    }
    (*v)[(*n)++] = id;
    return 0;
}

int tokenizer_encode_len(const Tokenizer *t, const char *text, size_t len, int add_special, int **ids, int *n_ids,
                         char *err, size_t errlen) {
    error_clear(err, errlen);
    if (ids) *ids = NULL;
    if (n_ids) *n_ids = 0;
    if (!t || (!text && len) || !ids || !n_ids) return fail(err, errlen, "tokenizer_encode: NULL argument");
    if (len > 0x7fffffff) return fail(err, errlen, "tokenizer: text too long");
    if (check_utf8(text, len, err, errlen)) return -1;
    const int bos = add_special && tokenizer_adds_bos(t);
    if (t->kind == TOKENIZER_SPM) {
        if (spm_encode(t->spm, text ? text : "", len, bos, ids, n_ids, err, errlen)) return -1;
        if (add_special && t->add_eos > 0) {
            int *v = realloc(*ids, sizeof(int) * (size_t)(*n_ids + 1));
            if (!v) { free(*ids); *ids = NULL; *n_ids = 0; return fail(err, errlen, "tokenizer: out of memory"); }
            *ids = v;
            (*ids)[(*n_ids)++] = t->eos;
        }
        return 0;
    }
    int *v = malloc(sizeof(int) * 16), n = 0, cap = 16;
    if (!v) return fail(err, errlen, "tokenizer: out of memory");
    const int *pre, *suf;
    int np, ns;
    hf_post_processor(t->hf, &pre, &np, &suf, &ns);
    // with add_bos_token/add_eos_token in the config, they decide (as transformers'
    // LlamaTokenizerFast rebuilds its post-processor from them); otherwise the post-processor
    const int cfg = t->add_bos >= 0 || t->add_eos >= 0;
    int rc = 0;
    if (add_special && !cfg)
        for (int i = 0; i < np && !rc; i++) rc = push_id(&v, &n, &cap, pre[i]);
    if (add_special && cfg && bos) rc = push_id(&v, &n, &cap, t->bos);
    if (!rc) rc = hf_encode(t->hf, text, len, &v, &n, &cap, err, errlen);
    if (add_special && !cfg)
        for (int i = 0; i < ns && !rc; i++) rc = push_id(&v, &n, &cap, suf[i]);
    if (!rc && add_special && cfg && t->add_eos > 0) rc = push_id(&v, &n, &cap, t->eos);
    if (rc) { free(v); if (err && !err[0]) fail(err, errlen, "tokenizer: encode failed"); return -1; }
    *ids = v, *n_ids = n;
    return 0;
}

int tokenizer_encode(const Tokenizer *t, const char *text, int add_special, int **ids, int *n_ids, char *err,
                     size_t errlen) {
    if (!text) {
        if (ids) *ids = NULL;
        if (n_ids) *n_ids = 0;
        return fail(err, errlen, "tokenizer_encode: NULL text");
    }
    return tokenizer_encode_len(t, text, strlen(text), add_special, ids, n_ids, err, errlen);
}

// --- decode ----------------------------------------------------------------------------

void token_stream_init(TokenStream *s) {
    if (s) s->at_start = 1, s->strip_left = -1, s->started = 0;
}

int token_stream_next(const Tokenizer *t, TokenStream *s, int id, char *out, int outcap) {
    if (!out || outcap <= 0) return 0;
    out[0] = '\0';
    if (!t || !s) return 0;
    if (t->kind == TOKENIZER_SPM) return spm_stream_next(t->spm, &s->at_start, id, out, outcap);
    size_t n;
    const char *p = hf_token_bytes(t->hf, id, &n);
    if (!p || hf_is_special(t->hf, id)) return 0;
    const char *sc;
    size_t sl;
    int start, stop;
    hf_stream_strip(t->hf, &sc, &sl, &start, &stop);
    if (s->strip_left < 0) s->strip_left = start;
    while (s->strip_left > 0 && n > 0) { // the decoder's Strip at the start of the text
        if (n >= sl && !memcmp(p, sc, sl)) p += sl, n -= sl, s->strip_left--;
        else s->strip_left = 0;
    }
    size_t w = 0;
    if (hf_join_with_space(t->hf) && s->started && outcap > 1) out[w++] = ' ';
    s->started = 1;
    if (n > (size_t)outcap - 1 - w) n = (size_t)outcap - 1 - w;
    memcpy(out + w, p, n);
    out[w + n] = '\0';
    return (int)(w + n);
}

// Invalid UTF-8 -> U+FFFD, one per maximal invalid subpart (as Rust's from_utf8_lossy).
static size_t lossy_len(const unsigned char *s, size_t n) { // bytes of one bad subpart, >= 1
    const unsigned char c = s[0];
    size_t need = c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xF0 && c <= 0xF4 ? 3 : 0;
    size_t k = 1;
    for (; k <= need && k < n; k++) {
        unsigned char lo = 0x80, hi = 0xBF;
        if (k == 1) {
            if (c == 0xE0) lo = 0xA0;
            else if (c == 0xED) hi = 0x9F;
            else if (c == 0xF0) lo = 0x90;
            else if (c == 0xF4) hi = 0x8F;
        }
        if (s[k] < lo || s[k] > hi) break;
    }
    return k;
}

char *tokenizer_decode_ex(const Tokenizer *t, const int *ids, int n_ids, int skip_special, size_t *len) {
    if (len) *len = 0;
    if (!t || n_ids < 0 || (!ids && n_ids > 0)) return NULL;
    if (t->kind == TOKENIZER_SPM) return spm_decode_len(t->spm, ids, n_ids, len);
    size_t total = 0, n;
    for (int i = 0; i < n_ids; i++) {
        if (!hf_token_bytes(t->hf, ids[i], &n)) return NULL; // out of range
        total += n + 1;
    }
    unsigned char *raw = malloc(total + 1);
    if (!raw) return NULL;
    size_t r = 0;
    int first = 1;
    for (int i = 0; i < n_ids; i++) {
        if (skip_special && hf_is_special(t->hf, ids[i])) continue;
        const char *p = hf_token_bytes(t->hf, ids[i], &n);
        if (hf_join_with_space(t->hf) && !first) raw[r++] = ' ';
        memcpy(raw + r, p, n);
        r += n, first = 0;
    }
    // the decoder's Strip over the whole text
    const char *sc;
    size_t sl, lo = 0, hi = r;
    int start, stop;
    hf_stream_strip(t->hf, &sc, &sl, &start, &stop);
    for (int k = 0; k < start && sl && hi - lo >= sl && !memcmp(raw + lo, sc, sl); k++) lo += sl;
    for (int k = 0; k < stop && sl && hi - lo >= sl && !memcmp(raw + hi - sl, sc, sl); k++) hi -= sl;
    // lossy UTF-8: at most 3 output bytes per input byte
    char *out = malloc(3 * (hi - lo) + 1);
    if (!out) { free(raw); return NULL; }
    size_t o = 0;
    for (size_t i = lo; i < hi;) {
        utf8proc_int32_t cp;
        const utf8proc_ssize_t k = utf8proc_iterate(raw + i, (utf8proc_ssize_t)(hi - i), &cp);
        if (k > 0) { memcpy(out + o, raw + i, (size_t)k); o += (size_t)k, i += (size_t)k; }
        else { memcpy(out + o, "\xef\xbf\xbd", 3); o += 3; i += lossy_len(raw + i, hi - i); }
    }
    out[o] = '\0';
    free(raw);
    if (len) *len = o;
    return out;
}

int tokenizer_cleans_up_spaces(const Tokenizer *t) { return t ? t->clean_up_spaces : 0; }

// transformers' clean_up_tokenization: these str.replace calls in this order, each over
// the whole text, left to right without overlaps (every one shortens, so in place).
size_t tokenizer_clean_up_spaces(char *text, size_t len) {
    static const char *const from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"};
    static const char *const to[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};
    for (size_t k = 0; text && k < sizeof from / sizeof from[0]; k++) {
        const size_t fl = strlen(from[k]), tl = strlen(to[k]);
        size_t r = 0, w = 0;
        while (r < len) {
            if (len - r >= fl && !memcmp(text + r, from[k], fl)) {
                memmove(text + w, to[k], tl);
                w += tl, r += fl;
            } else {
                text[w++] = text[r++];
            }
        }
        len = w;
    }
    if (text) text[len] = '\0';
    return len;
}

char *tokenizer_decode_len(const Tokenizer *t, const int *ids, int n_ids, size_t *len) {
    return tokenizer_decode_ex(t, ids, n_ids, 0, len);
}

char *tokenizer_decode(const Tokenizer *t, const int *ids, int n_ids) {
    return tokenizer_decode_ex(t, ids, n_ids, 0, NULL);
}
