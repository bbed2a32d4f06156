// Hugging Face tokenizer.json in C (see hf_tokenizer.h and docs/TOKENIZER.md).
//
// encode(text):
//   1. cut the raw text around added tokens that are not `normalized` (longest match);
//   2. each remaining segment: normalizer -> cut around the `normalized` added tokens ->
//      pre-tokenizer pieces (Split regexes, ByteLevel byte->unicode map, Digits);
//   3. each piece: BPE (ignore_merges, characters -> ids with byte_fallback / unk, then the
//      adjacent pair of lowest merge rank is merged until none is left), via a piece cache.
// Regexes: PCRE2 (UTF + UCP, JIT). NFC/NFKC/...: utf8proc. JSON: cJSON.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/hf_tokenizer.h"

#include "common/error.h"

#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

// --- small containers ------------------------------------------------------------

typedef struct { char *p; size_t len, cap; } Buf;
typedef struct { size_t off, len; } Span;
typedef struct { Span *v; size_t n, cap; } Spans;

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q, *cap = c;
    return 0;
}
static int buf_reserve(Buf *b, size_t extra) { return grow((void **)&b->p, &b->cap, b->len + extra + 1, 1); }
static int buf_add(Buf *b, const void *s, size_t n) {
    if (buf_reserve(b, n)) return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}
static int spans_add(Spans *s, size_t off, size_t len) {
    if (grow((void **)&s->v, &s->cap, s->n + 1, sizeof(Span))) return -1;
    s->v[s->n++] = (Span){off, len};
    return 0;
}
static int ints_add(int **v, int *n, int *cap, int x) {
    if (*n >= *cap) {
        size_t c = (size_t)*cap;
        if (c >= 0x3fffffff || grow((void **)v, &c, (size_t)*n + 1, sizeof(int))) return -1;
        *cap = (int)c;
    }
    (*v)[(*n)++] = x;
    return 0;
}

static uint64_t hash_bytes(const char *s, size_t n) { // FNV-1a, then a final mix
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    h ^= h >> 33;
    return h * 0xff51afd7ed558ccdull;
}

// --- UTF-8 -------------------------------------------------------------------------

// Length of the UTF-8 character at s[0..n) (1..4), or 0 if it is not valid.
static size_t utf8_char_len(const unsigned char *s, size_t n) {
    utf8proc_int32_t cp;
    const utf8proc_ssize_t k = utf8proc_iterate(s, (utf8proc_ssize_t)n, &cp);
    return k > 0 ? (size_t)k : 0;
}
static int32_t utf8_cp(const char *s, size_t n, size_t *k) {
    utf8proc_int32_t cp = -1;
    const utf8proc_ssize_t r = utf8proc_iterate((const unsigned char *)s, (utf8proc_ssize_t)n, &cp);
    *k = r > 0 ? (size_t)r : 1;
    return r > 0 ? cp : -1;
}
static size_t utf8_put(char *out, int32_t cp) { return (size_t)utf8proc_encode_char(cp, (utf8proc_uint8_t *)out); }

// Rust's char::is_whitespace (the Unicode White_Space property).
static int is_white(int32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}
// Rust's char::is_alphanumeric or '_' (single_word boundaries)
static int is_word(int32_t c) {
    if (c == '_') return 1;
    const utf8proc_category_t k = utf8proc_category(c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) ||
           (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}
static int32_t last_cp(const char *s, size_t n) { // last character of s[0..n), -1 if none
    if (!n) return -1;
    size_t i = n - 1, k;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    return utf8_cp(s + i, n - i, &k);
}

// --- GPT-2 byte <-> unicode map ------------------------------------------------------

// Printable bytes ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) map to themselves; the other
// 68 bytes, in order, to U+0100 onwards (space -> U+0120 'Ġ', newline -> U+010A 'Ċ').
static void build_byte_map(char enc[256][4], unsigned char enc_len[256], int16_t inv[512]) {
    int next = 256;
    for (int i = 0; i < 512; i++) inv[i] = -1;
    for (int b = 0; b < 256; b++) {
        const int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        const int cp = keep ? b : next++;
        enc_len[b] = (unsigned char)utf8_put(enc[b], cp);
        inv[cp] = (int16_t)b;
    }
}

// --- the tokenizer -------------------------------------------------------------------

enum { NM_NFC, NM_NFD, NM_NFKC, NM_NFKD, NM_LOWER, NM_PREPEND, NM_REPLACE };
enum { PT_SPLIT, PT_BYTELEVEL, PT_METASPACE };
enum { B_ISOLATED, B_REMOVED, B_MERGED_PREV, B_MERGED_NEXT, B_CONTIGUOUS };
enum { DC_BYTELEVEL, DC_REPLACE, DC_BYTEFALLBACK, DC_FUSE, DC_STRIP, DC_METASPACE };

typedef struct {
    int kind;
    char *text; size_t text_len;         // Prepend text / Replace content
    pcre2_code *re;                      // Replace pattern
} Normalizer;

typedef struct {
    int kind, behavior, invert, add_prefix_space; // Metaspace: add_prefix_space 0 never, 1 first, 2 always
    pcre2_code *re;                      // Split pattern; ByteLevel's GPT-2 regex if use_regex
    char rep[8]; size_t rep_len;         // Metaspace replacement character; behavior = split
} PreTok;

typedef struct {
    char *content; size_t len;           // as matched in the text (normalized when `normalized`)
    int id, special, lstrip, rstrip, single_word, normalized;
} Added;

typedef struct {                         // added tokens of one kind, by first byte, longest first
    int *order, n;
    int start[257];
} AddedSet;

typedef struct { uint64_t key; int32_t rank, id; } MergeSlot;
typedef struct { uint64_t hash; uint32_t key_off, key_len, ids_off, ids_n; } CacheEntry;

#define CACHE_SLOTS (1u << 16)
#define CACHE_MAX_ENTRIES (CACHE_SLOTS / 2)
#define CACHE_MAX_PIECE 256

struct HfTokenizer {
    // vocabulary: id -> string (pool), string -> id (open addressing, slot = id + 1)
    int n_ids;
    Buf pool;
    int64_t *tok_off;  // -1: no token with this id
    uint32_t *tok_len;
    uint32_t *slots; uint64_t slot_mask;
    // merges: (left id, right id) -> rank, merged id
    MergeSlot *merges; uint64_t merge_mask;
    int ignore_merges, byte_fallback, fuse_unk, unk_id;
    int space_cut;                       // long pieces may be cut before "▁" (see bpe_word)
    int byte_ids[256];                   // <0xNN> ids for byte_fallback (-1: missing)
    // pipeline
    Normalizer *norm; int n_norm;
    PreTok *pre; int n_pre;
    Added *added; int n_added;
    AddedSet raw_set, norm_set;
    char *is_special;                    // [n_ids]
    int *pp_prefix, n_pp_prefix, *pp_suffix, n_pp_suffix;
    // decoding
    Buf dec; uint32_t *dec_off;          // [n_ids + 1] bytes of each id in a stream
    char strip_char[8]; size_t strip_len; int strip_start, strip_stop, join_space;
    // byte-level map
    char enc[256][4]; unsigned char enc_len[256]; int16_t inv[512];
    // scratch (encode is single-threaded per tokenizer)
    int seg_at_start;                    // the segment being encoded starts the text
    pcre2_match_data *md;
    Buf work, norm_a, norm_b;
    Spans sp_a, sp_b;
    int *sym_id, *sym_prev, *sym_next; size_t sym_cap;
    struct HeapItem { int32_t rank, pos, lid, rid; } *heap; size_t heap_cap;
    // piece cache
    uint32_t *cache_slots; CacheEntry *cache; uint32_t cache_n; Buf cache_keys;
    int *cache_ids; size_t cache_ids_n, cache_ids_cap;
};

// --- vocabulary map --------------------------------------------------------------

static int vocab_find(const HfTokenizer *t, const char *s, size_t n) {
    if (!t->slots) return -1;
    for (uint64_t i = hash_bytes(s, n) & t->slot_mask;; i = (i + 1) & t->slot_mask) {
        const uint32_t v = t->slots[i];
        if (!v) return -1;
        const int id = (int)v - 1;
        if (t->tok_len[id] == n && !memcmp(t->pool.p + t->tok_off[id], s, n)) return id;
    }
}

static int vocab_build_index(HfTokenizer *t) {
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)t->n_ids) cap *= 2;
    if (!(t->slots = calloc(cap, sizeof *t->slots))) return -1;
    t->slot_mask = cap - 1;
    for (int id = 0; id < t->n_ids; id++) {
        if (t->tok_off[id] < 0) continue;
        const char *s = t->pool.p + t->tok_off[id];
        const size_t n = t->tok_len[id];
        if (vocab_find(t, s, n) >= 0) continue; // duplicate string: first id wins
        uint64_t i = hash_bytes(s, n) & t->slot_mask;
        while (t->slots[i]) i = (i + 1) & t->slot_mask;
        t->slots[i] = (uint32_t)id + 1;
    }
    return 0;
}

// --- merges map ----------------------------------------------------------------------

static uint64_t pair_key(int a, int b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }
static uint64_t mix64(uint64_t x) { x ^= x >> 31; x *= 0x9E3779B97F4A7C15ull; return x ^ (x >> 29); }

static const MergeSlot *merge_find(const HfTokenizer *t, int a, int b) {
    const uint64_t k = pair_key(a, b);
    for (uint64_t i = mix64(k) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        if (t->merges[i].key == UINT64_MAX) return NULL;
        if (t->merges[i].key == k) return &t->merges[i];
    }
}

// --- regexes -------------------------------------------------------------------------

static pcre2_code *compile_re(const char *pat, size_t len, uint32_t extra, char *err, size_t errlen) {
    int code;
    PCRE2_SIZE at;
    const uint32_t opts = PCRE2_UTF | (extra & PCRE2_LITERAL ? 0 : PCRE2_UCP) | extra;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, opts, &code, &at, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        fail(err, errlen, "tokenizer.json: regex rejected by PCRE2 at offset %zu: %s (pattern %.80s)",
                (size_t)at, (const char *)msg, pat);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); // optional speed-up; falls back to the interpreter
    return re;
}

// pattern: {"Regex": "..."} or {"String": "..."} (a literal)
static pcre2_code *compile_pattern(const cJSON *pat, char *err, size_t errlen) {
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(pat, "String");
    if (cJSON_IsString(r)) return compile_re(r->valuestring, strlen(r->valuestring), 0, err, errlen);
    if (cJSON_IsString(s)) return compile_re(s->valuestring, strlen(s->valuestring), PCRE2_LITERAL, err, errlen);
    fail(err, errlen, "tokenizer.json: pattern must be {\"Regex\": ...} or {\"String\": ...}");
    return NULL;
}

// Next match of re in s[0..n) at or after start: 1 (match [*ms, *me)), 0 (none), -1 (error).
static int re_next(HfTokenizer *t, const pcre2_code *re, const char *s, size_t n, size_t start,
                   size_t *ms, size_t *me) {
    if (start > n) return 0;
    const int rc = pcre2_match(re, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK, t->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) return -1;
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
    *ms = ov[0], *me = ov[1];
    return 1;
}

// Replace every match of re in s[0..n) by with[0..wn); result in out (reset first).
static int re_replace(HfTokenizer *t, const pcre2_code *re, const char *s, size_t n,
                      const char *with, size_t wn, Buf *out) {
    out->len = 0;
    if (buf_reserve(out, n)) return -1;
    size_t pos = 0, at = 0, ms, me;
    int r;
    while ((r = re_next(t, re, s, n, at, &ms, &me)) == 1) {
        if (buf_add(out, s + pos, ms - pos) || buf_add(out, with, wn)) return -1;
        pos = me;
        if (me == ms) { // empty match: step one character
            if (me >= n) break;
            const size_t k = utf8_char_len((const unsigned char *)s + me, n - me);
            if (buf_add(out, s + me, k ? k : 1)) return -1;
            pos = at = me + (k ? k : 1);
        } else at = me;
    }
    if (r < 0) return -1;
    if (pos < n && buf_add(out, s + pos, n - pos)) return -1;
    if (!out->p && buf_reserve(out, 0)) return -1;
    out->p[out->len] = '\0';
    return 0;
}

// --- loading: model ------------------------------------------------------------------

static char *dup_str(const char *s, size_t *len) {
    const size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    if (len) *len = n;
    return d;
}

static const char *type_of(const cJSON *o) {
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(ty) ? ty->valuestring : NULL;
}
static int flag(const cJSON *o, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}
static int nonempty_string(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) && v->valuestring[0];
}

static int set_token(HfTokenizer *t, int id, const char *s, size_t n) {
    if (id < 0 || id >= t->n_ids) return -1;
    t->tok_off[id] = (int64_t)t->pool.len;
    t->tok_len[id] = (uint32_t)n;
    return buf_add(&t->pool, s, n) || buf_add(&t->pool, "", 1) ? -1 : 0; // keep a NUL after each
}

static int load_model(HfTokenizer *t, const cJSON *model, const cJSON *added, char *err, size_t errlen) {
    const char *ty = type_of(model);
    if (!ty || strcmp(ty, "BPE"))
        return fail(err, errlen, "tokenizer.json: unsupported model type '%s' (only BPE)", ty ? ty : "(none)");
    if (nonempty_string(model, "continuing_subword_prefix") || nonempty_string(model, "end_of_word_suffix"))
        return fail(err, errlen, "tokenizer.json: BPE continuing_subword_prefix/end_of_word_suffix are not supported");
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(drop) && drop->valuedouble > 0)
        return fail(err, errlen, "tokenizer.json: BPE dropout is not supported");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab)) return fail(err, errlen, "tokenizer.json: model.vocab is not an object");
    if (merges && !cJSON_IsArray(merges)) return fail(err, errlen, "tokenizer.json: model.merges is not a list");
    t->ignore_merges = flag(model, "ignore_merges", 0);
    t->byte_fallback = flag(model, "byte_fallback", 0);
    t->fuse_unk = flag(model, "fuse_unk", 0);

    // ids: the vocabulary and the added tokens; n_ids = highest id + 1
    long max_id = -1;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 0x7ffffffe || e->valuedouble != (int)e->valuedouble)
            return fail(err, errlen, "tokenizer.json: vocab entry '%.40s' has no valid id", e->string);
        if (e->valueint > max_id) max_id = e->valueint;
    }
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 0x7ffffffe || !cJSON_IsString(c) || !c->valuestring[0])
            return fail(err, errlen, "tokenizer.json: an added token lacks a valid id or content");
        if (id->valueint > max_id) max_id = id->valueint;
    }
    if (max_id < 0) return fail(err, errlen, "tokenizer.json: empty vocabulary");
    if (max_id >= (1 << 24)) return fail(err, errlen, "tokenizer.json: token id %ld is too large", max_id);
    t->n_ids = (int)max_id + 1;
    t->tok_off = malloc(sizeof(int64_t) * (size_t)t->n_ids);
    t->tok_len = calloc((size_t)t->n_ids, sizeof(uint32_t));
    t->is_special = calloc((size_t)t->n_ids, 1);
    if (!t->tok_off || !t->tok_len || !t->is_special) return fail(err, errlen, "tokenizer: out of memory");
    for (int i = 0; i < t->n_ids; i++) t->tok_off[i] = -1;
    for (const cJSON *e = vocab->child; e; e = e->next)
        if (set_token(t, e->valueint, e->string, strlen(e->string))) return fail(err, errlen, "tokenizer: out of memory");
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const int id = cJSON_GetObjectItemCaseSensitive(a, "id")->valueint;
        const char *c = cJSON_GetObjectItemCaseSensitive(a, "content")->valuestring;
        if (t->tok_off[id] < 0 && set_token(t, id, c, strlen(c))) return fail(err, errlen, "tokenizer: out of memory");
    }
    if (vocab_build_index(t)) return fail(err, errlen, "tokenizer: out of memory");

    // No token has "▁" right after another character (but "▁"): then no merge can span a
    // boundary just before a "▁" that follows such a character
    t->space_cut = !t->ignore_merges;
    for (int id = 0; id < t->n_ids && t->space_cut; id++) {
        const char *p = t->pool.p + (t->tok_off[id] < 0 ? 0 : t->tok_off[id]);
        const size_t n = t->tok_off[id] < 0 ? 0 : t->tok_len[id];
        for (size_t k = 1; k + 3 <= n && t->space_cut; k++)
            if (!memcmp(p + k, "\xe2\x96\x81", 3) && (k < 3 || memcmp(p + k - 3, "\xe2\x96\x81", 3))) t->space_cut = 0;
    }

    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    t->unk_id = -1;
    if (cJSON_IsString(unk) && (t->unk_id = vocab_find(t, unk->valuestring, strlen(unk->valuestring))) < 0)
        return fail(err, errlen, "tokenizer.json: unk_token '%.40s' is not in the vocabulary", unk->valuestring);
    for (int b = 0; b < 256; b++) {
        char piece[8];
        snprintf(piece, sizeof piece, "<0x%02X>", b);
        t->byte_ids[b] = vocab_find(t, piece, 6);
    }

    // merges: "a b" strings or ["a", "b"] pairs; rank = index
    const int nm = merges ? cJSON_GetArraySize(merges) : 0;
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)nm + 2) cap *= 2;
    if (!(t->merges = malloc(cap * sizeof *t->merges))) return fail(err, errlen, "tokenizer: out of memory");
    for (uint64_t i = 0; i < cap; i++) t->merges[i].key = UINT64_MAX;
    t->merge_mask = cap - 1;
    Buf tmp = {0};
    int rank = 0, rc = 0;
    for (const cJSON *m = merges ? merges->child : NULL; m && !rc; m = m->next, rank++) {
        const char *a, *b;
        size_t na, nb;
        if (cJSON_IsString(m)) {
            a = m->valuestring;
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) { rc = fail(err, errlen, "tokenizer.json: merge %d '%.60s' is not 'a b'", rank, a); break; }
            na = (size_t)(sp - a), b = sp + 1, nb = strlen(b);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            a = m->child->valuestring, na = strlen(a);
            b = m->child->next->valuestring, nb = strlen(b);
        } else { rc = fail(err, errlen, "tokenizer.json: merge %d is neither 'a b' nor [a, b]", rank); break; }
        const int ia = vocab_find(t, a, na), ib = vocab_find(t, b, nb);
        tmp.len = 0;
        if (buf_add(&tmp, a, na) || buf_add(&tmp, b, nb)) { rc = fail(err, errlen, "tokenizer: out of memory"); break; }
        const int iab = vocab_find(t, tmp.p, tmp.len);
        if (ia < 0 || ib < 0 || iab < 0) {
            rc = fail(err, errlen, "tokenizer.json: merge %d names a token not in the vocabulary ('%.*s' + '%.*s')",
                         rank, (int)(na > 40 ? 40 : na), a, (int)(nb > 40 ? 40 : nb), b);
            break;
        }
        const uint64_t k = pair_key(ia, ib);
        uint64_t i = mix64(k) & t->merge_mask;
        while (t->merges[i].key != UINT64_MAX && t->merges[i].key != k) i = (i + 1) & t->merge_mask;
        if (t->merges[i].key == UINT64_MAX) t->merges[i] = (MergeSlot){k, rank, iab}; // first rank wins
    }
    free(tmp.p);
    return rc;
}

// --- loading: normalizer, pre-tokenizer, added tokens, post-processor, decoder -----------

static int add_normalizer(HfTokenizer *t, const cJSON *n, char *err, size_t errlen) {
    if (!n || cJSON_IsNull(n)) return 0;
    const char *ty = type_of(n);
    if (!ty) return fail(err, errlen, "tokenizer.json: normalizer without a type");
    if (!strcmp(ty, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list)) return fail(err, errlen, "tokenizer.json: Sequence normalizer without a list");
        for (const cJSON *c = list->child; c; c = c->next)
            if (add_normalizer(t, c, err, errlen)) return -1;
        return 0;
    }
    Normalizer nm = {0};
    if (!strcmp(ty, "NFC")) nm.kind = NM_NFC;
    else if (!strcmp(ty, "NFD")) nm.kind = NM_NFD;
    else if (!strcmp(ty, "NFKC")) nm.kind = NM_NFKC;
    else if (!strcmp(ty, "NFKD")) nm.kind = NM_NFKD;
    else if (!strcmp(ty, "Lowercase")) nm.kind = NM_LOWER;
    else if (!strcmp(ty, "Prepend")) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(n, "prepend");
        if (!cJSON_IsString(p)) return fail(err, errlen, "tokenizer.json: Prepend normalizer without 'prepend'");
        nm.kind = NM_PREPEND;
        if (!(nm.text = dup_str(p->valuestring, &nm.text_len))) return fail(err, errlen, "tokenizer: out of memory");
    } else if (!strcmp(ty, "Replace")) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(n, "content");
        if (!cJSON_IsString(c)) return fail(err, errlen, "tokenizer.json: Replace normalizer without 'content'");
        nm.kind = NM_REPLACE;
        if (!(nm.re = compile_pattern(cJSON_GetObjectItemCaseSensitive(n, "pattern"), err, errlen))) return -1;
        if (!(nm.text = dup_str(c->valuestring, &nm.text_len))) { pcre2_code_free(nm.re); return fail(err, errlen, "tokenizer: out of memory"); }
    } else return fail(err, errlen, "tokenizer.json: unsupported normalizer type '%s'", ty);
    Normalizer *v = realloc(t->norm, sizeof *v * (size_t)(t->n_norm + 1));
    if (!v) { free(nm.text); pcre2_code_free(nm.re); return fail(err, errlen, "tokenizer: out of memory"); }
    t->norm = v;
    t->norm[t->n_norm++] = nm;
    return 0;
}

static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int add_pretok(HfTokenizer *t, const cJSON *p, char *err, size_t errlen) {
    if (!p || cJSON_IsNull(p)) return 0;
    const char *ty = type_of(p);
    if (!ty) return fail(err, errlen, "tokenizer.json: pre_tokenizer without a type");
    if (!strcmp(ty, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(list)) return fail(err, errlen, "tokenizer.json: Sequence pre_tokenizer without a list");
        for (const cJSON *c = list->child; c; c = c->next)
            if (add_pretok(t, c, err, errlen)) return -1;
        return 0;
    }
    PreTok pt = {0};
    if (!strcmp(ty, "Split")) {
        static const char *names[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(p, "behavior");
        pt.kind = PT_SPLIT, pt.behavior = -1;
        for (int i = 0; i < 5 && cJSON_IsString(b); i++)
            if (!strcmp(b->valuestring, names[i])) pt.behavior = i;
        if (pt.behavior < 0) return fail(err, errlen, "tokenizer.json: unknown Split behavior '%s'",
                                            cJSON_IsString(b) ? b->valuestring : "(none)");
        pt.invert = flag(p, "invert", 0);
        if (!(pt.re = compile_pattern(cJSON_GetObjectItemCaseSensitive(p, "pattern"), err, errlen))) return -1;
    } else if (!strcmp(ty, "Digits")) {
        pt.kind = PT_SPLIT;
        pt.behavior = flag(p, "individual_digits", 0) ? B_ISOLATED : B_CONTIGUOUS;
        if (!(pt.re = compile_re("\\p{N}", 5, 0, err, errlen))) return -1;
    } else if (!strcmp(ty, "ByteLevel")) {
        pt.kind = PT_BYTELEVEL;
        pt.add_prefix_space = flag(p, "add_prefix_space", 1);
        if (flag(p, "use_regex", 1) && !(pt.re = compile_re(GPT2_REGEX, sizeof GPT2_REGEX - 1, 0, err, errlen))) return -1;
    } else if (!strcmp(ty, "Metaspace")) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(p, "replacement");
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(p, "prepend_scheme");
        const char *rep = cJSON_IsString(r) ? r->valuestring : "\xe2\x96\x81";
        if (!rep[0] || strlen(rep) > 4) return fail(err, errlen, "tokenizer.json: Metaspace replacement must be one character");
        pt.kind = PT_METASPACE;
        pt.rep_len = strlen(rep);
        memcpy(pt.rep, rep, pt.rep_len + 1);
        pt.behavior = flag(p, "split", 1);
        if (cJSON_IsString(ps)) {
            const char *v = ps->valuestring;
            pt.add_prefix_space = !strcmp(v, "always") ? 2 : !strcmp(v, "first") ? 1 : !strcmp(v, "never") ? 0 : -1;
            if (pt.add_prefix_space < 0) return fail(err, errlen, "tokenizer.json: unknown Metaspace prepend_scheme '%s'", v);
        } else pt.add_prefix_space = flag(p, "add_prefix_space", 1) ? 2 : 0;
    } else return fail(err, errlen, "tokenizer.json: unsupported pre_tokenizer type '%s'", ty);
    PreTok *v = realloc(t->pre, sizeof *v * (size_t)(t->n_pre + 1));
    if (!v) { pcre2_code_free(pt.re); return fail(err, errlen, "tokenizer: out of memory"); }
    t->pre = v;
    t->pre[t->n_pre++] = pt;
    return 0;
}

static int normalize(HfTokenizer *t, const char *s, size_t n, Buf *out);

// added tokens by first byte, then longest first
static int added_before(const Added *x, const Added *y) {
    const int bx = (unsigned char)x->content[0], by = (unsigned char)y->content[0];
    if (bx != by) return bx < by;
    if (x->len != y->len) return x->len > y->len;
    return x->id < y->id;
}

static int build_set(HfTokenizer *t, AddedSet *set, int normalized) {
    set->n = 0;
    if (!(set->order = malloc(sizeof(int) * (size_t)(t->n_added + 1)))) return -1;
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].normalized == normalized && t->added[i].len > 0) set->order[set->n++] = i;
    for (int i = 1; i < set->n; i++) { // insertion sort: at most a few thousand tokens, once
        const int v = set->order[i];
        int j = i - 1;
        while (j >= 0 && added_before(&t->added[v], &t->added[set->order[j]])) { set->order[j + 1] = set->order[j]; j--; }
        set->order[j + 1] = v;
    }
    int k = 0;
    for (int b = 0; b < 256; b++) {
        set->start[b] = k;
        while (k < set->n && (unsigned char)t->added[set->order[k]].content[0] == b) k++;
    }
    set->start[256] = set->n;
    return 0;
}

static int load_added(HfTokenizer *t, const cJSON *added, char *err, size_t errlen) {
    const int n = added ? cJSON_GetArraySize(added) : 0;
    if (!(t->added = calloc((size_t)n + 1, sizeof *t->added))) return fail(err, errlen, "tokenizer: out of memory");
    Buf tmp = {0};
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        Added *x = &t->added[t->n_added++];
        const char *c = cJSON_GetObjectItemCaseSensitive(a, "content")->valuestring;
        x->id = cJSON_GetObjectItemCaseSensitive(a, "id")->valueint;
        x->special = flag(a, "special", 0);
        x->lstrip = flag(a, "lstrip", 0), x->rstrip = flag(a, "rstrip", 0);
        x->single_word = flag(a, "single_word", 0);
        x->normalized = flag(a, "normalized", !x->special) && t->n_norm > 0;
        if (x->special) t->is_special[x->id] = 1;
        if (x->normalized) { // matched in normalized text: normalize the content too
            if (normalize(t, c, strlen(c), &tmp)) { free(tmp.p); return fail(err, errlen, "tokenizer: cannot normalize added token '%.40s'", c); }
            x->content = malloc(tmp.len + 1);
            if (x->content) memcpy(x->content, tmp.p, tmp.len + 1), x->len = tmp.len;
        } else x->content = dup_str(c, &x->len);
        if (!x->content) { free(tmp.p); return fail(err, errlen, "tokenizer: out of memory"); }
    }
    free(tmp.p);
    if (build_set(t, &t->raw_set, 0) || build_set(t, &t->norm_set, 1)) return fail(err, errlen, "tokenizer: out of memory");
    return 0;
}

// ids of a post-processor "special_tokens" entry or a [token, id] pair
static int pp_push(HfTokenizer *t, int **v, int *n, const cJSON *ids, char *err, size_t errlen) {
    int cap = *n;
    for (const cJSON *i = ids ? ids->child : NULL; i; i = i->next) {
        if (!cJSON_IsNumber(i) || i->valueint < 0 || i->valueint >= t->n_ids)
            return fail(err, errlen, "tokenizer.json: post_processor names an unknown token id");
        if (ints_add(v, n, &cap, i->valueint)) return fail(err, errlen, "tokenizer: out of memory");
    }
    return 0;
}

static int load_post(HfTokenizer *t, const cJSON *p, char *err, size_t errlen) {
    if (!p || cJSON_IsNull(p)) return 0;
    const char *ty = type_of(p);
    if (!ty) return fail(err, errlen, "tokenizer.json: post_processor without a type");
    if (!strcmp(ty, "ByteLevel")) return 0; // only fixes offsets
    if (!strcmp(ty, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "processors");
        if (!cJSON_IsArray(list)) return fail(err, errlen, "tokenizer.json: Sequence post_processor without a list");
        for (const cJSON *c = list->child; c; c = c->next)
            if (load_post(t, c, err, errlen)) return -1;
        return 0;
    }
    if (!strcmp(ty, "TemplateProcessing")) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
        const cJSON *specials = cJSON_GetObjectItemCaseSensitive(p, "special_tokens");
        if (!cJSON_IsArray(single)) return fail(err, errlen, "tokenizer.json: TemplateProcessing without 'single'");
        int seen_a = 0;
        for (const cJSON *it = single->child; it; it = it->next) {
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
            if (cJSON_GetObjectItemCaseSensitive(it, "Sequence")) { seen_a = 1; continue; }
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(st, "id");
            if (!cJSON_IsString(name)) return fail(err, errlen, "tokenizer.json: bad TemplateProcessing item");
            const cJSON *entry = cJSON_GetObjectItemCaseSensitive(specials, name->valuestring);
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(entry, "ids");
            if (!cJSON_IsArray(ids))
                return fail(err, errlen, "tokenizer.json: TemplateProcessing token '%.40s' has no ids", name->valuestring);
            if (seen_a ? pp_push(t, &t->pp_suffix, &t->n_pp_suffix, ids, err, errlen)
                       : pp_push(t, &t->pp_prefix, &t->n_pp_prefix, ids, err, errlen)) return -1;
        }
        return 0;
    }
    if (!strcmp(ty, "BertProcessing") || !strcmp(ty, "RobertaProcessing")) {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(p, "cls");
        const cJSON *sep = cJSON_GetObjectItemCaseSensitive(p, "sep");
        if (!cJSON_IsArray(cls) || !cJSON_IsArray(sep) || cJSON_GetArraySize(cls) != 2 || cJSON_GetArraySize(sep) != 2)
            return fail(err, errlen, "tokenizer.json: %s without cls/sep", ty);
        const cJSON *ic = cls->child->next, *is = sep->child->next;
        int cp = t->n_pp_prefix, cs = t->n_pp_suffix;
        if (!cJSON_IsNumber(ic) || !cJSON_IsNumber(is) || ic->valueint < 0 || ic->valueint >= t->n_ids ||
            is->valueint < 0 || is->valueint >= t->n_ids)
            return fail(err, errlen, "tokenizer.json: %s names an unknown token id", ty);
        if (ints_add(&t->pp_prefix, &t->n_pp_prefix, &cp, ic->valueint) ||
            ints_add(&t->pp_suffix, &t->n_pp_suffix, &cs, is->valueint))
            return fail(err, errlen, "tokenizer: out of memory");
        return 0;
    }
    return fail(err, errlen, "tokenizer.json: unsupported post_processor type '%s'", ty);
}

// Decoder steps, flattened out of Sequence.
typedef struct { int kind; pcre2_code *re; const char *content; int start, stop; } DecStep;

static int collect_decoder(const cJSON *d, DecStep *steps, int *n, char *err, size_t errlen) {
    const char *ty = type_of(d);
    if (!ty) return fail(err, errlen, "tokenizer.json: decoder without a type");
    if (!strcmp(ty, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, "decoders");
        if (!cJSON_IsArray(list)) return fail(err, errlen, "tokenizer.json: Sequence decoder without a list");
        for (const cJSON *c = list->child; c; c = c->next)
            if (collect_decoder(c, steps, n, err, errlen)) return -1;
        return 0;
    }
    if (*n >= 32) return fail(err, errlen, "tokenizer.json: decoder too long");
    DecStep s = {0};
    if (!strcmp(ty, "ByteLevel")) s.kind = DC_BYTELEVEL;
    else if (!strcmp(ty, "ByteFallback")) s.kind = DC_BYTEFALLBACK;
    else if (!strcmp(ty, "Fuse")) s.kind = DC_FUSE;
    else if (!strcmp(ty, "Replace")) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(d, "content");
        if (!cJSON_IsString(c)) return fail(err, errlen, "tokenizer.json: Replace decoder without 'content'");
        s.kind = DC_REPLACE, s.content = c->valuestring;
        if (!(s.re = compile_pattern(cJSON_GetObjectItemCaseSensitive(d, "pattern"), err, errlen))) return -1;
    } else if (!strcmp(ty, "Strip")) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(d, "content");
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(d, "start"), *b = cJSON_GetObjectItemCaseSensitive(d, "stop");
        if (!cJSON_IsString(c) || !cJSON_IsNumber(a) || !cJSON_IsNumber(b) || a->valueint < 0 || b->valueint < 0 ||
            !c->valuestring[0] || strlen(c->valuestring) > 4)
            return fail(err, errlen, "tokenizer.json: Strip decoder needs content (one character), start, stop");
        s.kind = DC_STRIP, s.content = c->valuestring, s.start = a->valueint, s.stop = b->valueint;
    } else if (!strcmp(ty, "Metaspace")) {
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(d, "replacement");
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(d, "prepend_scheme");
        const char *rep = cJSON_IsString(r) ? r->valuestring : "\xe2\x96\x81";
        s.kind = DC_METASPACE, s.content = " ";
        s.start = cJSON_IsString(ps) ? strcmp(ps->valuestring, "never") != 0 : flag(d, "add_prefix_space", 1);
        if (!(s.re = compile_re(rep, strlen(rep), PCRE2_LITERAL, err, errlen))) return -1;
    } else return fail(err, errlen, "tokenizer.json: unsupported decoder type '%s'", ty);
    steps[(*n)++] = s;
    return 0;
}

static int byte_piece(const char *s, size_t n) { // "<0xNN>" -> NN, else -1
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        const char c = s[i];
        const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

// Per id, the bytes it contributes to a decoded stream.
static int load_decoder(HfTokenizer *t, const cJSON *d, char *err, size_t errlen) {
    DecStep steps[32];
    int ns = 0, rc = 0;
    if (!d || cJSON_IsNull(d)) t->join_space = 1;
    else if (collect_decoder(d, steps, &ns, err, errlen)) { for (int i = 0; i < ns; i++) pcre2_code_free(steps[i].re); return -1; }
    if (!(t->dec_off = malloc(sizeof(uint32_t) * ((size_t)t->n_ids + 1)))) rc = fail(err, errlen, "tokenizer: out of memory");
    char *is_added = rc ? NULL : calloc((size_t)t->n_ids, 1);
    if (!rc && !is_added) rc = fail(err, errlen, "tokenizer: out of memory");
    for (int i = 0; !rc && i < t->n_added; i++) is_added[t->added[i].id] = 1;
    // the whole-text steps (after a Fuse or ByteLevel, which join the tokens)
    int fused = 0;
    for (int i = 0; i < ns; i++) {
        if (steps[i].kind == DC_FUSE || steps[i].kind == DC_BYTELEVEL) fused = 1;
        if (steps[i].kind == DC_METASPACE && steps[i].start) {
            memcpy(t->strip_char, " ", 2), t->strip_len = 1, t->strip_start = 1, t->strip_stop = 0;
        }
        if (steps[i].kind == DC_STRIP && fused) {
            t->strip_len = strlen(steps[i].content);
            memcpy(t->strip_char, steps[i].content, t->strip_len + 1);
            t->strip_start = steps[i].start, t->strip_stop = steps[i].stop;
        }
    }
    Buf a = {0}, b = {0};
    for (int id = 0; !rc && id < t->n_ids; id++) {
        t->dec_off[id] = (uint32_t)t->dec.len;
        if (t->tok_off[id] < 0) continue;
        a.len = 0;
        if (buf_add(&a, t->pool.p + t->tok_off[id], t->tok_len[id])) { rc = -1; break; }
        int done = 0; // a step that ends the per-token part
        for (int i = 0; i < ns && !done && !rc; i++) {
            const DecStep *s = &steps[i];
            if (s->kind == DC_REPLACE || s->kind == DC_METASPACE) {
                rc = re_replace(t, s->re, a.p, a.len, s->content, strlen(s->content), &b);
                Buf x = a; a = b; b = x;
            } else if (s->kind == DC_BYTEFALLBACK) {
                const int v = byte_piece(a.p, a.len);
                if (v >= 0) { a.len = 1; a.p[0] = (char)v; }
            } else if (s->kind == DC_BYTELEVEL) {
                if (!is_added[id]) { // chars back to bytes; a token with other chars stays as it is
                    b.len = 0;
                    int ok = 1;
                    for (size_t k = 0, m; k < a.len && ok; k += m) {
                        const int32_t cp = utf8_cp(a.p + k, a.len - k, &m);
                        if (cp < 0 || cp >= 512 || t->inv[cp] < 0) ok = 0;
                        else { const char c = (char)t->inv[cp]; rc |= buf_add(&b, &c, 1); }
                    }
                    if (ok) { Buf x = a; a = b; b = x; }
                }
                done = 1;
            } else if (s->kind == DC_FUSE) done = 1;
            else if (s->kind == DC_STRIP) { // per token (no Fuse before it)
                size_t lo = 0, hi = a.len;
                const size_t cl = strlen(s->content);
                for (int k = 0; k < s->start && hi - lo >= cl && !memcmp(a.p + lo, s->content, cl); k++) lo += cl;
                for (int k = 0; k < s->stop && hi - lo >= cl && !memcmp(a.p + hi - cl, s->content, cl); k++) hi -= cl;
                memmove(a.p, a.p + lo, hi - lo);
                a.len = hi - lo;
            }
        }
        if (rc || t->dec.len + a.len > UINT32_MAX - 1 || buf_add(&t->dec, a.p, a.len)) rc = fail(err, errlen, "tokenizer: out of memory");
    }
    if (!rc) t->dec_off[t->n_ids] = (uint32_t)t->dec.len;
    if (!rc && !t->dec.p && buf_reserve(&t->dec, 0)) rc = fail(err, errlen, "tokenizer: out of memory");
    free(a.p), free(b.p), free(is_added);
    for (int i = 0; i < ns; i++) pcre2_code_free(steps[i].re);
    return rc;
}

void hf_tokenizer_free(HfTokenizer *t) {
    if (!t) return;
    free(t->pool.p), free(t->tok_off), free(t->tok_len), free(t->slots), free(t->merges);
    for (int i = 0; i < t->n_norm; i++) free(t->norm[i].text), pcre2_code_free(t->norm[i].re);
    for (int i = 0; i < t->n_pre; i++) pcre2_code_free(t->pre[i].re);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->norm), free(t->pre), free(t->added), free(t->raw_set.order), free(t->norm_set.order);
    free(t->is_special), free(t->pp_prefix), free(t->pp_suffix), free(t->dec.p), free(t->dec_off);
    pcre2_match_data_free(t->md);
    free(t->work.p), free(t->norm_a.p), free(t->norm_b.p), free(t->sp_a.v), free(t->sp_b.v);
    free(t->sym_id), free(t->sym_prev), free(t->sym_next), free(t->heap);
    free(t->cache_slots), free(t->cache), free(t->cache_keys.p), free(t->cache_ids);
    free(t);
}

HfTokenizer *hf_tokenizer_load(const char *json, size_t len, char *err, size_t errlen) {
    error_clear(err, errlen);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        const size_t off = at && at >= json && at <= json + len ? (size_t)(at - json) : 0;
        fail(err, errlen, "tokenizer.json: malformed JSON near byte %zu", off);
        return NULL;
    }
    HfTokenizer *t = calloc(1, sizeof *t);
    int rc = t ? 0 : fail(err, errlen, "tokenizer: out of memory");
    if (!rc && !cJSON_IsObject(root)) rc = fail(err, errlen, "tokenizer.json: the top level is not an object");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!rc && added && !cJSON_IsArray(added) && !cJSON_IsNull(added))
        rc = fail(err, errlen, "tokenizer.json: added_tokens is not a list");
    if (added && !cJSON_IsArray(added)) added = NULL;
    if (!rc) {
        build_byte_map(t->enc, t->enc_len, t->inv);
        if (!(t->md = pcre2_match_data_create(1, NULL))) rc = fail(err, errlen, "tokenizer: out of memory");
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!rc && !cJSON_IsObject(model)) rc = fail(err, errlen, "tokenizer.json: no 'model' object");
    if (!rc) rc = load_model(t, model, added, err, errlen);
    if (!rc) rc = add_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), err, errlen);
    if (!rc) rc = add_pretok(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), err, errlen);
    if (!rc) rc = load_added(t, added, err, errlen);
    if (!rc) rc = load_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), err, errlen);
    if (!rc) rc = load_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder"), err, errlen);
    if (!rc) {
        t->cache_slots = calloc(CACHE_SLOTS, sizeof *t->cache_slots);
        t->cache = malloc(sizeof *t->cache * CACHE_MAX_ENTRIES);
        if (!t->cache_slots || !t->cache) rc = fail(err, errlen, "tokenizer: out of memory");
    }
    cJSON_Delete(root);
    if (rc) { hf_tokenizer_free(t); return NULL; }
    return t;
}

// --- encode: normalizer --------------------------------------------------------------

// The normalizer chain over s[0..n) into out (out must not alias s).
static int normalize(HfTokenizer *t, const char *s, size_t n, Buf *out) {
    out->len = 0;
    if (buf_add(out, s, n)) return -1;
    Buf tmp = {0};
    for (int i = 0; i < t->n_norm; i++) {
        const Normalizer *nm = &t->norm[i];
        tmp.len = 0;
        if (nm->kind == NM_PREPEND) {
            if (out->len == 0) continue;
            if (buf_add(&tmp, nm->text, nm->text_len) || buf_add(&tmp, out->p, out->len)) goto oom;
        } else if (nm->kind == NM_REPLACE) {
            if (re_replace(t, nm->re, out->p, out->len, nm->text, nm->text_len, &tmp)) goto oom;
        } else if (nm->kind == NM_LOWER) {
            char c4[4];
            for (size_t k = 0, m; k < out->len; k += m) {
                const int32_t cp = utf8_cp(out->p + k, out->len - k, &m);
                if (buf_add(&tmp, c4, utf8_put(c4, utf8proc_tolower(cp)))) goto oom;
            }
        } else { // NFC / NFD / NFKC / NFKD
            int opt = UTF8PROC_STABLE;
            opt |= nm->kind == NM_NFC || nm->kind == NM_NFKC ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE;
            if (nm->kind == NM_NFKC || nm->kind == NM_NFKD) opt |= UTF8PROC_COMPAT;
            utf8proc_uint8_t *dst = NULL;
            const utf8proc_ssize_t r = out->len ? utf8proc_map((const utf8proc_uint8_t *)out->p,
                                                               (utf8proc_ssize_t)out->len, &dst, (utf8proc_option_t)opt) : 0;
            if (r < 0) { free(dst); goto oom; }
            const int bad = buf_add(&tmp, dst ? (const char *)dst : "", (size_t)r);
            free(dst);
            if (bad) goto oom;
        }
        Buf x = *out; *out = tmp; tmp = x;
    }
    free(tmp.p);
    if (!out->p && buf_reserve(out, 0)) return -1;
    return 0;
oom:
    free(tmp.p);
    return -1;
}

// --- encode: pre-tokenizer -----------------------------------------------------------

// One Split over the piece w[off..off+len): its pieces appended to out.
static int split_piece(HfTokenizer *t, const PreTok *pt, Buf *w, Span in, Spans *out) {
    const char *s = w->p + in.off;
    const size_t n = in.len;
    // items: (start, end, is_match) in order, gaps included
    size_t at = 0, pos = 0, ms, me;
    int r, prev_match = 0;
    size_t first_out = out->n;
    #define EMIT(a, b, m) do { \
        const size_t a_ = (a), b_ = (b); int m_ = (m) ^ pt->invert; \
        if (pt->behavior == B_REMOVED) { if (!m_ && b_ > a_ && spans_add(out, in.off + a_, b_ - a_)) return -1; } \
        else if (pt->behavior == B_ISOLATED) { if (b_ > a_ && spans_add(out, in.off + a_, b_ - a_)) return -1; } \
        else if (pt->behavior == B_MERGED_PREV && m_ && !prev_match && out->n > first_out) \
            out->v[out->n - 1].len = in.off + b_ - out->v[out->n - 1].off; \
        else if (pt->behavior == B_CONTIGUOUS && m_ == prev_match && out->n > first_out) \
            out->v[out->n - 1].len = in.off + b_ - out->v[out->n - 1].off; \
        else if (pt->behavior == B_MERGED_NEXT && !m_ && prev_match && out->n > first_out) \
            out->v[out->n - 1].len = in.off + b_ - out->v[out->n - 1].off; \
        else if (spans_add(out, in.off + a_, b_ - a_)) return -1; \
        prev_match = m_; \
    } while (0)
    // MergedWithNext: a match joins the gap after it (folded from the right in HF; the same as
    // "a non-match directly after a match extends it" when read from the left)
    while ((r = re_next(t, pt->re, s, n, at, &ms, &me)) == 1) {
        if (ms > pos) EMIT(pos, ms, 0);
        EMIT(ms, me, 1);
        pos = me;
        if (me == ms) {
            if (me >= n) break;
            const size_t k = utf8_char_len((const unsigned char *)s + me, n - me);
            at = me + (k ? k : 1);
        } else at = me;
    }
    if (r < 0) return -1;
    if (pos < n) EMIT(pos, n, 0);
    #undef EMIT
    // drop empty pieces (HF drops empty splits)
    size_t k = first_out;
    for (size_t i = first_out; i < out->n; i++)
        if (out->v[i].len) out->v[k++] = out->v[i];
    out->n = k;
    return 0;
}

static int bytelevel_piece(HfTokenizer *t, const PreTok *pt, Buf *w, Span in, Spans *out) {
    // optional prefix space, optional GPT-2 regex split, then every byte -> its character
    Span src = in;
    if (pt->add_prefix_space && !(in.len && w->p[in.off] == ' ')) {
        if (buf_reserve(w, in.len + 1)) return -1;
        const size_t off = w->len;
        w->p[w->len++] = ' ';
        memmove(w->p + w->len, w->p + in.off, in.len); // (w->p may have moved: offsets only)
        w->len += in.len;
        src = (Span){off, in.len + 1};
    }
    Spans parts = {0};
    int rc = 0;
    if (pt->re) {
        PreTok iso = {.kind = PT_SPLIT, .behavior = B_ISOLATED, .re = pt->re};
        rc = split_piece(t, &iso, w, src, &parts);
    } else rc = spans_add(&parts, src.off, src.len);
    for (size_t i = 0; !rc && i < parts.n; i++) {
        const Span p = parts.v[i];
        if (buf_reserve(w, p.len * 2)) { rc = -1; break; }
        const size_t off = w->len;
        for (size_t k = 0; k < p.len; k++) {
            const unsigned char b = (unsigned char)w->p[p.off + k];
            memcpy(w->p + w->len, t->enc[b], t->enc_len[b]);
            w->len += t->enc_len[b];
        }
        rc = spans_add(out, off, w->len - off);
    }
    free(parts.v);
    return rc;
}

// Metaspace: ' ' -> the replacement, which is also prepended (always, or only to the
// piece that starts the text); with split, cut before every replacement character.
static int metaspace_piece(const PreTok *pt, Buf *w, Span in, int first, Spans *out) {
    if (buf_reserve(w, in.len * pt->rep_len + pt->rep_len)) return -1;
    const size_t off = w->len;
    const int starts = in.len >= pt->rep_len && !memcmp(w->p + in.off, pt->rep, pt->rep_len);
    if (!starts && (pt->add_prefix_space == 2 || (pt->add_prefix_space == 1 && first)) &&
        !(in.len && w->p[in.off] == ' ')) {
        memcpy(w->p + w->len, pt->rep, pt->rep_len);
        w->len += pt->rep_len;
    }
    for (size_t k = 0; k < in.len; k++) {
        const char c = w->p[in.off + k];
        if (c == ' ') memcpy(w->p + w->len, pt->rep, pt->rep_len), w->len += pt->rep_len;
        else w->p[w->len++] = c;
    }
    if (!pt->behavior) return spans_add(out, off, w->len - off);
    size_t start = off; // MergedWithNext on the replacement: each one begins a piece
    for (size_t k = off + 1; k + pt->rep_len <= w->len; k++)
        if (!memcmp(w->p + k, pt->rep, pt->rep_len)) {
            if (spans_add(out, start, k - start)) return -1;
            start = k;
        }
    return w->len > start ? spans_add(out, start, w->len - start) : 0;
}

// --- encode: BPE ---------------------------------------------------------------------

static int heap_less(const struct HeapItem *a, const struct HeapItem *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}
static int heap_push(HfTokenizer *t, size_t *n, struct HeapItem it) {
    if (grow((void **)&t->heap, &t->heap_cap, *n + 1, sizeof it)) return -1;
    size_t i = (*n)++;
    while (i > 0) {
        const size_t p = (i - 1) / 2;
        if (!heap_less(&it, &t->heap[p])) break;
        t->heap[i] = t->heap[p];
        i = p;
    }
    t->heap[i] = it;
    return 0;
}
static struct HeapItem heap_pop(HfTokenizer *t, size_t *n) {
    const struct HeapItem top = t->heap[0], last = t->heap[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(&t->heap[c + 1], &t->heap[c])) c++;
        if (!heap_less(&t->heap[c], &last)) break;
        t->heap[i] = t->heap[c];
        i = c;
    }
    if (*n) t->heap[i] = last;
    return top;
}
static int push_pair(HfTokenizer *t, size_t *hn, int left) {
    const int right = t->sym_next[left];
    if (right < 0) return 0;
    const MergeSlot *m = merge_find(t, t->sym_id[left], t->sym_id[right]);
    if (!m) return 0;
    return heap_push(t, hn, (struct HeapItem){m->rank, left, t->sym_id[left], t->sym_id[right]});
}

static int cache_get(HfTokenizer *t, const char *s, size_t n, uint64_t h, int **ids, int *cnt, int *cap) {
    for (uint32_t i = (uint32_t)h & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
        const uint32_t v = t->cache_slots[i];
        if (!v) return 0;
        const CacheEntry *e = &t->cache[v - 1];
        if (e->hash == h && e->key_len == n && !memcmp(t->cache_keys.p + e->key_off, s, n)) {
            for (uint32_t k = 0; k < e->ids_n; k++)
                if (ints_add(ids, cnt, cap, t->cache_ids[e->ids_off + k])) return -1;
            return 1;
        }
    }
}
static void cache_put(HfTokenizer *t, const char *s, size_t n, uint64_t h, const int *ids, int cnt) {
    if (t->cache_n >= CACHE_MAX_ENTRIES) { // full: start over
        memset(t->cache_slots, 0, CACHE_SLOTS * sizeof *t->cache_slots);
        t->cache_n = 0, t->cache_keys.len = 0, t->cache_ids_n = 0;
    }
    if (buf_reserve(&t->cache_keys, n) ||
        grow((void **)&t->cache_ids, &t->cache_ids_cap, t->cache_ids_n + (size_t)cnt, sizeof(int)))
        return; // no room: just do not cache
    CacheEntry *e = &t->cache[t->cache_n];
    *e = (CacheEntry){h, (uint32_t)t->cache_keys.len, (uint32_t)n, (uint32_t)t->cache_ids_n, (uint32_t)cnt};
    buf_add(&t->cache_keys, s, n);
    memcpy(t->cache_ids + t->cache_ids_n, ids, sizeof(int) * (size_t)cnt);
    t->cache_ids_n += (size_t)cnt;
    uint32_t i = (uint32_t)h & (CACHE_SLOTS - 1);
    while (t->cache_slots[i]) i = (i + 1) & (CACHE_SLOTS - 1);
    t->cache_slots[i] = ++t->cache_n;
}

// One pre-tokenized piece s[0..n) -> ids appended.
static int bpe_piece(HfTokenizer *t, const char *s, size_t n, int **ids, int *cnt, int *cap) {
    if (n == 0) return 0;
    if (t->ignore_merges) {
        const int id = vocab_find(t, s, n);
        if (id >= 0) return ints_add(ids, cnt, cap, id);
    }
    const uint64_t h = hash_bytes(s, n);
    const int cacheable = n <= CACHE_MAX_PIECE;
    if (cacheable) {
        const int r = cache_get(t, s, n, h, ids, cnt, cap);
        if (r) return r < 0 ? -1 : 0;
    }
    // characters -> symbols
    if (t->sym_cap < n) {
        size_t c0 = t->sym_cap, c1 = t->sym_cap, c2 = t->sym_cap;
        if (grow((void **)&t->sym_id, &c0, n, sizeof(int)) || grow((void **)&t->sym_prev, &c1, n, sizeof(int)) ||
            grow((void **)&t->sym_next, &c2, n, sizeof(int))) return -1;
        t->sym_cap = c0 < c1 ? (c0 < c2 ? c0 : c2) : (c1 < c2 ? c1 : c2);
    }
    int ns = 0;
    for (size_t k = 0, m; k < n; k += m) {
        m = utf8_char_len((const unsigned char *)s + k, n - k);
        if (!m) m = 1;
        int id = vocab_find(t, s + k, m);
        if (id >= 0) { t->sym_id[ns++] = id; continue; }
        if (t->byte_fallback) {
            int all = 1;
            for (size_t b = 0; b < m; b++) all &= t->byte_ids[(unsigned char)s[k + b]] >= 0;
            if (all) {
                for (size_t b = 0; b < m; b++) t->sym_id[ns++] = t->byte_ids[(unsigned char)s[k + b]];
                continue;
            }
        }
        if (t->unk_id < 0) continue; // no unk token: the character is dropped (as HF does)
        if (t->fuse_unk && ns > 0 && t->sym_id[ns - 1] == t->unk_id) continue;
        t->sym_id[ns++] = t->unk_id;
    }
    for (int i = 0; i < ns; i++) t->sym_prev[i] = i - 1, t->sym_next[i] = i + 1 < ns ? i + 1 : -1;
    // merge the lowest-ranked adjacent pair (leftmost on ties) until none is left
    size_t hn = 0;
    for (int i = 0; i + 1 < ns; i++)
        if (push_pair(t, &hn, i)) return -1;
    while (hn) {
        const struct HeapItem it = heap_pop(t, &hn);
        const int l = it.pos, r = t->sym_next[l];
        if (t->sym_id[l] != it.lid || r < 0 || t->sym_id[r] != it.rid) continue; // stale
        const MergeSlot *m = merge_find(t, it.lid, it.rid);
        t->sym_id[l] = m->id;
        t->sym_id[r] = -1;
        t->sym_next[l] = t->sym_next[r];
        if (t->sym_next[r] >= 0) t->sym_prev[t->sym_next[r]] = l;
        if (t->sym_prev[l] >= 0 && push_pair(t, &hn, t->sym_prev[l])) return -1;
        if (push_pair(t, &hn, l)) return -1;
    }
    const int first = *cnt;
    for (int i = ns ? 0 : -1; i >= 0; i = t->sym_next[i])
        if (ints_add(ids, cnt, cap, t->sym_id[i])) return -1;
    if (cacheable) cache_put(t, s, n, h, *ids + first, *cnt - first);
    return 0;
}

// A piece, possibly long (SentencePiece-style files have no pre-tokenizer: the whole text
// is one piece). With space_cut, BPE of the piece equals BPE of its parts cut before every
// "▁" that follows another character: merges are local, and no token (so no merge result)
// can span such a cut. The parts are short and cacheable, and the heap stays small.
static int bpe_word(HfTokenizer *t, const char *s, size_t n, int **ids, int *cnt, int *cap) {
    if (!t->space_cut || n <= CACHE_MAX_PIECE) return bpe_piece(t, s, n, ids, cnt, cap);
    size_t start = 0;
    for (size_t k = 1; k + 3 <= n; k++) // (E2 is a lead byte: k is a character boundary)
        if (!memcmp(s + k, "\xe2\x96\x81", 3) && !(k >= 3 && !memcmp(s + k - 3, "\xe2\x96\x81", 3))) {
            if (bpe_piece(t, s + start, k - start, ids, cnt, cap)) return -1;
            start = k;
        }
    return bpe_piece(t, s + start, n - start, ids, cnt, cap);
}

// normalized text s[0..n) (no added tokens in it) -> pre-tokenizer -> BPE
static int encode_plain(HfTokenizer *t, const char *s, size_t n, int **ids, int *cnt, int *cap) {
    if (n == 0) return 0;
    Buf *w = &t->work;
    w->len = 0;
    if (buf_add(w, s, n)) return -1;
    Spans *cur = &t->sp_a, *nxt = &t->sp_b;
    cur->n = 0;
    if (spans_add(cur, 0, n)) return -1;
    for (int i = 0; i < t->n_pre; i++) {
        nxt->n = 0;
        for (size_t k = 0; k < cur->n; k++) {
            const PreTok *pt = &t->pre[i];
            const int first = t->seg_at_start && k == 0 && cur->v[k].off == 0;
            const int r = pt->kind == PT_SPLIT       ? split_piece(t, pt, w, cur->v[k], nxt)
                          : pt->kind == PT_BYTELEVEL ? bytelevel_piece(t, pt, w, cur->v[k], nxt)
                                                     : metaspace_piece(pt, w, cur->v[k], first, nxt);
            if (r) return -1;
        }
        Spans *x = cur; cur = nxt; nxt = x;
    }
    for (size_t k = 0; k < cur->n; k++)
        if (bpe_word(t, w->p + cur->v[k].off, cur->v[k].len, ids, cnt, cap)) return -1;
    return 0;
}

// --- encode: added tokens ------------------------------------------------------------

typedef int (*SegmentFn)(HfTokenizer *t, const char *s, size_t n, int **ids, int *cnt, int *cap);

// Cut s[0..n) around the added tokens of set (leftmost, then longest), with their
// single_word / lstrip / rstrip rules; plain segments go to fn.
static int split_added(HfTokenizer *t, const AddedSet *set, const char *s, size_t n, SegmentFn fn,
                       int **ids, int *cnt, int *cap) {
    size_t done = 0; // text before this is consumed
    size_t i = 0;
    while (i < n) {
        const unsigned char b = (unsigned char)s[i];
        const Added *hit = NULL;
        for (int k = set->start[b]; k < set->start[b + 1]; k++) {
            const Added *a = &t->added[set->order[k]];
            if (a->len <= n - i && !memcmp(s + i, a->content, a->len)) { hit = a; break; }
        }
        if (!hit) { i++; continue; }
        size_t start = i, stop = i + hit->len;
        if (hit->single_word) {
            size_t k;
            const int before = start > 0 && is_word(last_cp(s, start));
            const int after = stop < n && is_word(utf8_cp(s + stop, n - stop, &k));
            if (before || after) { i = stop; continue; } // not a word on its own: plain text
        }
        if (hit->lstrip)
            while (start > done) {
                size_t j = start - 1;
                while (j > done && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
                size_t k;
                if (!is_white(utf8_cp(s + j, start - j, &k))) break;
                start = j;
            }
        if (hit->rstrip)
            while (stop < n) {
                size_t k;
                if (!is_white(utf8_cp(s + stop, n - stop, &k))) break;
                stop += k;
            }
        const int at_start = t->seg_at_start;
        t->seg_at_start = at_start && done == 0;
        if (start > done && fn(t, s + done, start - done, ids, cnt, cap)) return -1;
        t->seg_at_start = at_start;
        if (ints_add(ids, cnt, cap, hit->id)) return -1;
        done = i = stop;
    }
    const int at_start = t->seg_at_start;
    t->seg_at_start = at_start && done == 0;
    if (n > done && fn(t, s + done, n - done, ids, cnt, cap)) return -1;
    t->seg_at_start = at_start;
    return 0;
}

static int encode_normalized_segment(HfTokenizer *t, const char *s, size_t n, int **ids, int *cnt, int *cap) {
    return split_added(t, &t->norm_set, s, n, encode_plain, ids, cnt, cap);
}

static int encode_raw_segment(HfTokenizer *t, const char *s, size_t n, int **ids, int *cnt, int *cap) {
    if (t->n_norm == 0) return encode_normalized_segment(t, s, n, ids, cnt, cap);
    Buf out = {0}; // own buffer: segments may nest no further, but keep it simple and safe
    if (normalize(t, s, n, &out)) { free(out.p); return -1; }
    const int r = encode_normalized_segment(t, out.p, out.len, ids, cnt, cap);
    free(out.p);
    return r;
}

int hf_encode(HfTokenizer *t, const char *text, size_t len, int **ids, int *n, int *cap, char *err, size_t errlen) {
    if (!t || (!text && len)) return fail(err, errlen, "tokenizer: NULL argument");
    t->seg_at_start = 1;
    if (split_added(t, &t->raw_set, text, len, encode_raw_segment, ids, n, cap))
        return fail(err, errlen, "tokenizer: out of memory (or a regex failed) while encoding");
    return 0;
}

// --- queries ----------------------------------------------------------------------

int hf_vocab_size(const HfTokenizer *t) { return t ? t->n_ids : 0; }
const char *hf_piece(const HfTokenizer *t, int id) {
    if (!t || id < 0 || id >= t->n_ids || t->tok_off[id] < 0) return "";
    return t->pool.p + t->tok_off[id];
}
int hf_piece_to_id(const HfTokenizer *t, const char *piece) {
    if (!t || !piece) return -1;
    return vocab_find(t, piece, strlen(piece));
}
int hf_is_special(const HfTokenizer *t, int id) { return t && id >= 0 && id < t->n_ids && t->is_special[id]; }
void hf_post_processor(const HfTokenizer *t, const int **prefix, int *n_prefix, const int **suffix, int *n_suffix) {
    *prefix = t->pp_prefix, *n_prefix = t->n_pp_prefix, *suffix = t->pp_suffix, *n_suffix = t->n_pp_suffix;
}
const char *hf_token_bytes(const HfTokenizer *t, int id, size_t *len) {
    if (!t || id < 0 || id >= t->n_ids) { *len = 0; return NULL; }
    *len = t->dec_off[id + 1] - t->dec_off[id];
    return t->dec.p + t->dec_off[id];
}
void hf_stream_strip(const HfTokenizer *t, const char **c, size_t *clen, int *start, int *stop) {
    *c = t->strip_char, *clen = t->strip_len, *start = t->strip_start, *stop = t->strip_stop;
}
int hf_join_with_space(const HfTokenizer *t) { return t->join_space; }
