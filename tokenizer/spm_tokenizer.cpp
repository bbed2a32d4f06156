// SentencePiece backend of tokenizer/tokenizer.h: a thin C wrapper over the
// SentencePiece C++ library (see spm_tokenizer.h).
// Every entry point catches all exceptions: SentencePiece/protobuf can throw
// (e.g. protobuf's FatalException, std::bad_alloc) and C callers cannot.

#include "tokenizer/spm_tokenizer.h"

#include "common/error.h"

#include <sentencepiece_processor.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

static const char kSpace[] = "\xe2\x96\x81";  // U+2581, SentencePiece's space
static const size_t kSpaceLen = 3;

struct SpmTokenizer {
    sentencepiece::SentencePieceProcessor sp;
    int vocab_size, bos, eos, unk;
    // Per id, what the piece decodes to in mid-stream: "" for control tokens,
    // the unk surface for <unk>, the piece with U+2581 -> ' ' otherwise.
    std::vector<std::string> text;
    std::vector<int> byte;          // 0..255 for <0xNN> byte pieces, else -1
    std::vector<char> lead_space;   // text came from a piece starting with U+2581
    // How DecodeIds treats a leading U+2581 (depends on the normalizer spec):
    bool strip_first;  // drops it from the first piece that has text
    bool strip_all;    // keeps dropping while no text was produced yet
                       // (models trained with remove_extra_whitespaces)
};

// "<0x41>" -> 0x41, anything else -> -1.
static int parse_byte_piece(const std::string &p) {
    unsigned v;
    char end;
    if (p.size() == 6 && sscanf(p.c_str(), "<0x%2X%c", &v, &end) == 2 && end == '>') return (int)v;
    return -1;
}

static bool decode_ids(const SpmTokenizer *t, const std::vector<int> &ids, std::string *out) {
    return t->sp.Decode(ids, out).ok();
}

// Builds the per-id tables used by streaming decode. Rather than reading the
// normalizer flags (their proto is not in the public headers), ask
// SentencePiece itself how it decodes a leading U+2581.
static void build_tables(SpmTokenizer *t) {
    const int n = t->vocab_size;
    t->text.assign(n, std::string());
    t->byte.assign(n, -1);
    t->lead_space.assign(n, 0);
    std::string unk_surface;
    if (t->unk >= 0 && !decode_ids(t, {t->unk}, &unk_surface)) unk_surface.clear();

    int probe = -1;  // some normal piece "\u2581x..."
    for (int id = 0; id < n; id++) {
        if (t->sp.IsControl(id)) continue;
        if (t->sp.IsUnknown(id)) { t->text[id] = unk_surface; continue; }
        const std::string &p = t->sp.IdToPiece(id);
        if (t->sp.IsByte(id) && (t->byte[id] = parse_byte_piece(p)) >= 0) continue;
        std::string &s = t->text[id];
        for (size_t i = 0; i < p.size();) {
            if (p.compare(i, kSpaceLen, kSpace) == 0) { s += ' '; i += kSpaceLen; }
            else s += p[i++];
        }
        t->lead_space[id] = p.compare(0, kSpaceLen, kSpace) == 0;
        if (t->lead_space[id] && p.size() > kSpaceLen && probe < 0) probe = id;
    }

    std::string d;
    t->strip_first = probe >= 0 && decode_ids(t, {probe}, &d) && d == t->text[probe].substr(1);
    // Only a piece that is exactly U+2581 tells "first" and "all" apart.
    const int ws = t->sp.PieceToId(kSpace);
    t->strip_all = t->strip_first && ws >= 0 && ws < n && t->sp.IdToPiece(ws) == kSpace &&
                   decode_ids(t, {ws, ws}, &d) && d.empty();
}

extern "C" {

SpmTokenizer *spm_from_bytes(const void *data, size_t nbytes, char *err, size_t errlen) {
    error_clear(err, errlen);
    if (!data && nbytes) { fail(err, errlen, "tokenizer: NULL data"); return NULL; }
    SpmTokenizer *t = NULL;
    try {
        t = new SpmTokenizer();
        const auto st = t->sp.LoadFromSerializedProto(
            std::string(data ? (const char *)data : "", nbytes));
        if (!st.ok()) {
            // Collapse the status message to one line.
            std::string msg = st.ToString();
            for (char &c : msg) if (c == '\n' || c == '\r') c = ' ';
            fail(err, errlen, "tokenizer: not a valid SentencePiece model (%zu bytes): %s",
                    nbytes, msg.c_str());
            delete t;
            return NULL;
        }
        t->vocab_size = t->sp.GetPieceSize();
        if (t->vocab_size <= 0) {
            fail(err, errlen, "tokenizer: model has no pieces");
            delete t;
            return NULL;
        }
        t->bos = t->sp.bos_id();
        t->eos = t->sp.eos_id();
        t->unk = t->sp.unk_id();
        build_tables(t);
        return t;
    } catch (const std::bad_alloc &) {
        fail(err, errlen, "tokenizer: out of memory");
    } catch (const std::exception &e) {
        fail(err, errlen, "tokenizer: SentencePiece failed: %s", e.what());
    } catch (...) {
        fail(err, errlen, "tokenizer: SentencePiece failed");
    }
    delete t;
    return NULL;
}

// Reads the file ourselves: SentencePiece's own loader throws
// std::ios_base::failure when given a directory.
SpmTokenizer *spm_from_file(const char *path, char *err, size_t errlen) {
    error_clear(err, errlen);
    if (!path) { fail(err, errlen, "tokenizer: NULL path"); return NULL; }
    FILE *f = fopen(path, "rb");
    if (!f) { fail(err, errlen, "tokenizer: cannot open %s: %s", path, strerror(errno)); return NULL; }
    std::string buf;
    char chunk[65536];
    size_t got;
    bool oom = false;
    try {
        while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) buf.append(chunk, got);
    } catch (...) {
        oom = true;
    }
    const bool bad = ferror(f) != 0;
    const int e = errno;
    fclose(f);
    if (oom) { fail(err, errlen, "tokenizer: out of memory reading %s", path); return NULL; }
    if (bad) { fail(err, errlen, "tokenizer: cannot read %s: %s", path, strerror(e)); return NULL; }
    SpmTokenizer *t = spm_from_bytes(buf.data(), buf.size(), err, errlen);
    if (!t && err && errlen) {  // name the file in the message
        char *msg = strdup(err);
        if (msg) fail(err, errlen, "%s: %s", path, msg);
        free(msg);
    }
    return t;
}

void spm_free(SpmTokenizer *t) { delete t; }

int spm_vocab_size(const SpmTokenizer *t) { return t ? t->vocab_size : 0; }
int spm_bos_id(const SpmTokenizer *t) { return t ? t->bos : -1; }
int spm_eos_id(const SpmTokenizer *t) { return t ? t->eos : -1; }
int spm_unk_id(const SpmTokenizer *t) { return t ? t->unk : -1; }

const char *spm_piece(const SpmTokenizer *t, int id) {
    if (!t || id < 0 || id >= t->vocab_size) return "";
    try {
        return t->sp.IdToPiece(id).c_str();
    } catch (...) {
        return "";
    }
}

int spm_encode(const SpmTokenizer *t, const char *text, size_t len, int add_bos, int **ids,
               int *n_ids, char *err, size_t errlen) {
    error_clear(err, errlen);
    if (ids) *ids = NULL;
    if (n_ids) *n_ids = 0;
    if (!t || !text || !ids || !n_ids) { fail(err, errlen, "tokenizer: NULL argument"); return -1; }
    try {
        std::vector<int> v;
        const auto st = t->sp.Encode(std::string(text, len), &v);
        if (!st.ok()) {
            fail(err, errlen, "tokenizer: %s", st.ToString().c_str());
            return -1;
        }
        const size_t extra = (add_bos && t->bos >= 0) ? 1 : 0;
        const size_t n = v.size() + extra;
        if (n > (size_t)0x7fffffff) { fail(err, errlen, "tokenizer: text too long"); return -1; }
        int *out = (int *)malloc((n ? n : 1) * sizeof(int));
        if (!out) { fail(err, errlen, "tokenizer: out of memory"); return -1; }
        if (extra) out[0] = t->bos;
        if (!v.empty()) memcpy(out + extra, v.data(), v.size() * sizeof(int));
        *ids = out;
        *n_ids = (int)n;
        return 0;
    } catch (const std::bad_alloc &) {
        fail(err, errlen, "tokenizer: out of memory");
    } catch (...) {
        fail(err, errlen, "tokenizer: SentencePiece failed");
    }
    return -1;
}

int spm_piece_to_id(const SpmTokenizer *t, const char *piece) {
    if (!t || !piece) return -1;
    try {
        const int id = t->sp.PieceToId(piece);
        // PieceToId answers unk for unknown pieces: check the piece really is it
        return id >= 0 && id < t->vocab_size && t->sp.IdToPiece(id) == piece ? id : -1;
    } catch (...) {
        return -1;
    }
}

// Mirrors SentencePiece's Decode(): control pieces are invisible and do not
// end the "start of text" state; the first piece that starts with U+2581
// loses it (once, or -- strip_all -- until some text has been produced);
// anything that produces text ends the start state.
int spm_stream_next(const SpmTokenizer *t, int *at_start, int id, char *out, int outcap) {
    if (!out || outcap <= 0) return 0;
    out[0] = '\0';
    if (!t || !at_start || id < 0 || id >= t->vocab_size) return 0;

    char one;
    const char *p;
    size_t n;
    if (t->byte[id] >= 0) {
        one = (char)t->byte[id];
        p = &one;
        n = 1;
    } else {
        p = t->text[id].data();
        n = t->text[id].size();
        if (*at_start && t->lead_space[id] && t->strip_first) {
            p++, n--;
            if (!t->strip_all) *at_start = 0;
        }
    }
    if (n > 0) *at_start = 0;
    if (n > (size_t)outcap - 1) n = (size_t)outcap - 1;
    memcpy(out, p, n);
    out[n] = '\0';
    return (int)n;
}

char *spm_decode(const SpmTokenizer *t, const int *ids, int n_ids) {
    return spm_decode_len(t, ids, n_ids, NULL);
}

char *spm_decode_len(const SpmTokenizer *t, const int *ids, int n_ids, size_t *len) {
    if (len) *len = 0;
    if (!t || n_ids < 0 || (!ids && n_ids > 0)) return NULL;
    try {
        // SentencePiece rejects bad ids too, but its IdToPiece() on a bad id
        // is a fatal protobuf check, so never let one get that far.
        for (int i = 0; i < n_ids; i++)
            if (ids[i] < 0 || ids[i] >= t->vocab_size) return NULL;
        std::string s;
        if (!t->sp.Decode(std::vector<int>(ids, ids + n_ids), &s).ok()) return NULL;
        char *out = (char *)malloc(s.size() + 1);
        if (!out) return NULL;
        memcpy(out, s.data(), s.size());
        out[s.size()] = '\0';
        if (len) *len = s.size();
        return out;
    } catch (...) {
        return NULL;
    }
}

}  // extern "C"
