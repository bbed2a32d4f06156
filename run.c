// run: the command line. Parses flags, loads the model and tokenizer, and owns the
// loop: prompt -> prefill -> sample -> decode -> print. Also --info, --ppl and
// --dump-logits. All the math is in model/ and attention/.
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/model.h"
#include "model/sampler.h"
#include "tokenizer/tokenizer.h"

#define PREFILL_CHUNK 64 // tokens per forward() call when reading a prompt

// --- options ---------------------------------------------------------------------

typedef struct {
    const char *model_path;
    const char *prompt;         // -p
    const char *token_list;     // --tokens
    const char *tokenizer_path; // -z
    const char *dump_logits;    // --dump-logits FILE
    const char *ppl_path;       // --ppl FILE
    int steps;                  // -n
    float temperature;          // -t
    float top_p;                // --top-p
    int top_k;                  // --top-k
    uint64_t seed;              // -s
    int context;                // -c (0 = the model's max_seq_len)
    int threads;                // --threads (0 = OpenMP default)
    int print_ids, info;
    MlaMode mla_mode;
} Options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: run MODEL.bin [options]\n"
            "  -p TEXT            prompt (BOS is prepended)\n"
            "  --tokens \"ID ...\"  prompt as raw token ids (no BOS added)\n"
            "  -n N               tokens to generate (default 256; 0 = only read the prompt)\n"
            "  -t F               temperature (default 0.8; 0 = greedy)\n"
            "  --top-p F          nucleus sampling threshold (default 0.9; 1 = off)\n"
            "  --top-k N          sample among the N most likely tokens (default 0 = off)\n"
            "  -s N               random seed (default: time)\n"
            "  -c N               context length = KV-cache size (default: the model's)\n"
            "  -z PATH            SentencePiece tokenizer (default: the one in MODEL.bin)\n"
            "  --mla MODE         absorbed (default) or naive MLA attention\n"
            "  --threads N        OpenMP threads\n"
            "  --print-ids        print generated token ids instead of text\n"
            "  --dump-logits FILE write float32 logits of every prompt position\n"
            "  --ppl FILE         perplexity on a text file (stories split by <|endoftext|>)\n"
            "  --info             print a JSON summary of the model and exit\n");
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "run: error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static long parse_int(const char *flag, const char *v, long lo, long hi) {
    char *end;
    errno = 0;
    const long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        die("%s needs an integer in [%ld, %ld], got '%s'", flag, lo, hi, v);
    return x;
}

static float parse_float(const char *flag, const char *v, float lo, float hi) {
    char *end;
    errno = 0;
    const float x = strtof(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi))
        die("%s needs a number in [%g, %g], got '%s'", flag, lo, hi, v);
    return x;
}

static Options parse_args(int argc, char **argv) {
    Options o = {0};
    o.steps = 256;
    o.temperature = 0.8f;
    o.top_p = 0.9f;
    o.seed = (uint64_t)time(NULL);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); exit(0); }
        if (!strcmp(a, "--print-ids")) { o.print_ids = 1; continue; }
        if (!strcmp(a, "--info")) { o.info = 1; continue; }
        if (a[0] != '-') {
            if (o.model_path) die("unexpected argument '%s' (the model is %s)", a, o.model_path);
            o.model_path = a;
            continue;
        }
        static const char *takes_value[] = {"-p", "--tokens", "-n", "-t", "--top-p", "--top-k", "-s", "-c",
                                            "-z", "--threads", "--dump-logits", "--ppl", "--mla"};
        int known = 0;
        for (size_t k = 0; k < sizeof takes_value / sizeof *takes_value; k++) known |= !strcmp(a, takes_value[k]);
        if (!known) die("unknown option '%s' (see run --help)", a);
        if (i + 1 >= argc) die("%s needs a value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "-p")) o.prompt = v;
        else if (!strcmp(a, "--tokens")) o.token_list = v;
        else if (!strcmp(a, "-n")) o.steps = (int)parse_int(a, v, 0, 1 << 24);
        else if (!strcmp(a, "-t")) o.temperature = parse_float(a, v, 0.0f, 100.0f);
        else if (!strcmp(a, "--top-p")) o.top_p = parse_float(a, v, 0.0f, 1.0f);
        else if (!strcmp(a, "--top-k")) o.top_k = (int)parse_int(a, v, 0, 1 << 24);
        else if (!strcmp(a, "-s")) o.seed = (uint64_t)parse_int(a, v, 0, INT64_MAX);
        else if (!strcmp(a, "-c")) o.context = (int)parse_int(a, v, 1, 1 << 24);
        else if (!strcmp(a, "-z")) o.tokenizer_path = v;
        else if (!strcmp(a, "--threads")) o.threads = (int)parse_int(a, v, 1, 1024);
        else if (!strcmp(a, "--dump-logits")) o.dump_logits = v;
        else if (!strcmp(a, "--ppl")) o.ppl_path = v;
        else if (!strcmp(a, "--mla")) {
            if (!strcmp(v, "absorbed")) o.mla_mode = MLA_ABSORBED;
            else if (!strcmp(v, "naive")) o.mla_mode = MLA_NAIVE;
            else die("--mla must be 'absorbed' or 'naive', got '%s'", v);
        }
    }
    if (!o.model_path) { usage(stderr); die("no model given"); }
    if (o.prompt && o.token_list) die("give either -p or --tokens, not both");
    return o;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// "12 7 99" -> ids, each checked against the vocabulary
static int *parse_token_list(const char *s, int vocab_size, int *n_out) {
    int cap = 16, n = 0;
    int *ids = malloc(sizeof(int) * (size_t)cap);
    if (!ids) die("out of memory");
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        const long v = strtol(p, &end, 10);
        if (end == p || errno) die("--tokens: '%s' is not a list of integers", s);
        if (v < 0 || v >= vocab_size) die("--tokens: id %ld is outside the vocabulary [0, %d)", v, vocab_size);
        if (n == cap) {
            cap *= 2;
            int *grown = realloc(ids, sizeof(int) * (size_t)cap);
            if (!grown) die("out of memory");
            ids = grown;
        }
        ids[n++] = (int)v;
        p = end;
    }
    *n_out = n;
    return ids;
}

// --- --info ----------------------------------------------------------------------

// "gqa x6" for a uniform model, else each layer's kind in order: "mha, gqa, mla"
static void attention_layout(const Model *m, char *out, size_t cap) {
    const int L = m->cfg.n_layers;
    int uniform = 1;
    for (int n = 1; n < L; n++) uniform &= !strcmp(layer_kind_name(&m->layers[n]), layer_kind_name(&m->layers[0]));
    if (uniform) { snprintf(out, cap, "%s x%d", layer_kind_name(&m->layers[0]), L); return; }
    size_t len = 0;
    out[0] = 0;
    for (int n = 0; n < L && len + 8 < cap; n++)
        len += (size_t)snprintf(out + len, cap - len, "%s%s", n ? ", " : "", layer_kind_name(&m->layers[n]));
}

static void print_info(const Model *m, int context) {
    const Config *c = &m->cfg;
    char layout[512];
    attention_layout(m, layout, sizeof layout);
    static const char *pairing[] = {"neox", "interleaved"};
    static const char *scaling[] = {"none", "linear", "llama3", "yarn"};
    printf("{\n  \"format_version\": %d,\n  \"architecture\": \"pre-norm decoder: RMSNorm, RoPE, SwiGLU, per-layer attention\",\n"
           "  \"attention\": \"%s\",\n  \"dim\": %d,\n  \"n_layers\": %d,\n  \"vocab_size\": %d,\n"
           "  \"max_seq_len\": %d,\n  \"hidden_dim\": %d,\n  \"n_params\": %zu,\n"
           "  \"active_params\": %zu,\n"
           "  \"tied_embeddings\": %s,\n  \"norm_eps\": %g,\n  \"bos_id\": %d,\n  \"eos_id\": %d,\n"
           "  \"rope\": {\"theta\": %g, \"pairing\": \"%s\", \"scaling\": \"%s\", \"factor\": %g},\n"
           "  \"sliding_window\": %d,\n  \"tokenizer_embedded\": %s,\n  \"layers\": [\n",
           c->format_version, layout, c->dim, c->n_layers, c->vocab_size, c->max_seq_len,
           c->hidden_dim, m->n_params, model_active_params(m),
           c->tied_embeddings ? "true" : "false", c->norm_eps, c->bos_id, c->eos_id, c->rope.theta,
           pairing[c->rope.pairing], scaling[c->rope.scaling], c->rope.factor, c->sliding_window,
           m->tokenizer_bytes ? "true" : "false");
    for (int n = 0; n < c->n_layers; n++) {
        const Layer *l = &m->layers[n];
        printf("    {\"layer\": %d, \"kind\": \"%s\", ", n, layer_kind_name(l));
        if (l->kind == ATTN_GQA)
            printf("\"n_heads\": %d, \"n_kv_heads\": %d, \"head_dim\": %d, \"rope_dim\": %d, ",
                   l->gqa.n_heads, l->gqa.n_kv_heads, l->gqa.head_dim, l->rope_dim);
        else
            printf("\"n_heads\": %d, \"q_lora_rank\": %d, \"kv_lora_rank\": %d, \"qk_nope_head_dim\": %d, "
                   "\"qk_rope_head_dim\": %d, \"v_head_dim\": %d, ",
                   l->mla.n_heads, l->mla.q_lora_rank, l->mla.kv_lora_rank, l->mla.qk_nope_head_dim,
                   l->mla.qk_rope_head_dim, l->mla.v_head_dim);
        if (l->kind == ATTN_GQA && l->gqa.q_norm) printf("\"qk_norm\": true, ");
        if (l->ffn == FFN_DENSE) {
            printf("\"ffn\": \"dense\", \"ffn_hidden\": %d, ", l->ffn_hidden);
        } else {
            static const char *scoring[] = {"softmax", "sigmoid"};
            static const char *method[] = {"greedy", "group_limited_greedy", "noaux_tc"};
            const MoEWeights *w = &l->moe;
            printf("\"ffn\": \"moe\", \"n_experts\": %d, \"top_k\": %d, \"expert_hidden\": %d, "
                   "\"shared_hidden\": %d, \"scoring\": \"%s\", \"topk_method\": \"%s\", "
                   "\"n_group\": %d, \"topk_group\": %d, \"norm_topk_prob\": %s, "
                   "\"routed_scaling_factor\": %g, \"active_ffn_params\": %zu, ",
                   w->n_experts, w->top_k, w->expert_hidden, w->shared_hidden, scoring[w->scoring],
                   method[w->topk_method], w->n_group, w->topk_group, w->norm_topk_prob ? "true" : "false",
                   w->routed_scaling_factor, moe_active_params(w, c->dim));
        }
        printf("\"kv_bytes_per_token\": %zu}%s\n", layer_kv_floats_per_token(l) * sizeof(float),
               n + 1 < c->n_layers ? "," : "");
    }
    const size_t per_token = model_kv_bytes_per_token(m);
    printf("  ],\n  \"kv_bytes_per_token\": %zu,\n  \"context\": %d,\n  \"kv_bytes_at_context\": %zu\n}\n",
           per_token, context, per_token * (size_t)context);
}

// --- running a sequence ----------------------------------------------------------

// Feeds ids[0..n) at positions pos0.. in chunks. With all_logits, returns every
// position's logits in out ([n, V], may be NULL); else the last token's in s->logits.
static float *run_tokens(const Model *m, RunState *s, const int *ids, int n, int pos0, float *out) {
    float *logits = NULL;
    const size_t V = (size_t)m->cfg.vocab_size;
    for (int done = 0; done < n;) {
        const int chunk = n - done < s->max_tokens ? n - done : s->max_tokens;
        logits = forward(m, s, ids + done, chunk, pos0 + done, out != NULL);
        if (out) memcpy(out + (size_t)done * V, logits, sizeof(float) * (size_t)chunk * V);
        done += chunk;
    }
    return logits;
}

// --- --ppl -------------------------------------------------------------------------

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    if (!buf) die("out of memory");
    for (;;) {
        if (len + 1 >= cap) {
            cap *= 2;
            char *grown = realloc(buf, cap);
            if (!grown) die("out of memory reading %s", path);
            buf = grown;
        }
        const size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
    }
    if (ferror(f)) die("cannot read %s", path);
    fclose(f);
    buf[len] = 0;
    *n = len;
    return buf;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Teacher-forced NLL over every story of the file: s = [BOS] text [EOS], predict
// s[i] from s[:i]; a story longer than the context runs in windows of `context`
// input positions, each from an empty cache (docs/TRAINING.md defines the same).
static void perplexity(const Model *m, RunState *s, Tokenizer *tok, const char *path) {
    size_t len;
    char *text = read_file(path, &len);
    const size_t V = (size_t)m->cfg.vocab_size;
    const int T = s->context;
    float *logits = malloc(sizeof(float) * (size_t)T * V);
    if (!logits) die("out of memory");
    double total_nll = 0.0;
    long n_tokens = 0, n_stories = 0, n_bytes = 0;
    char *story = text;
    while (story && *story) {
        // cut at the next separator line
        char *sep = strstr(story, "<|endoftext|>");
        while (sep && !((sep == text || sep[-1] == '\n') && (sep[13] == '\n' || sep[13] == '\r' || sep[13] == 0)))
            sep = strstr(sep + 1, "<|endoftext|>");
        char *next = NULL;
        if (sep) {
            *sep = 0;
            next = sep + 13;
        }
        // strip surrounding whitespace
        while (*story && is_space(*story)) story++;
        size_t slen = strlen(story);
        while (slen > 0 && is_space(story[slen - 1])) story[--slen] = 0;
        if (slen > 0) {
            int *ids, n_ids;
            char err[256];
            if (tokenizer_encode(tok, story, 0, &ids, &n_ids, err, sizeof err)) die("--ppl: %s", err);
            int *seq = malloc(sizeof(int) * (size_t)(n_ids + 2));
            if (!seq) die("out of memory");
            int n = 0;
            if (m->cfg.bos_id >= 0) seq[n++] = m->cfg.bos_id;
            memcpy(seq + n, ids, sizeof(int) * (size_t)n_ids);
            n += n_ids;
            if (m->cfg.eos_id >= 0) seq[n++] = m->cfg.eos_id;
            free(ids);
            for (int w = 0; w + 1 < n; w += T) {
                const int n_in = (n - 1 - w) < T ? (n - 1 - w) : T;
                run_tokens(m, s, seq + w, n_in, 0, logits);
                for (int i = 0; i < n_in; i++) {
                    const float *row = logits + (size_t)i * V;
                    double max = row[0], sum = 0.0;
                    for (size_t j = 1; j < V; j++) if (row[j] > max) max = row[j];
                    for (size_t j = 0; j < V; j++) sum += exp((double)row[j] - max);
                    total_nll += log(sum) + max - row[seq[w + i + 1]];
                }
                n_tokens += n_in;
            }
            free(seq);
            n_stories++;
            n_bytes += (long)slen;
        }
        story = next;
    }
    free(text);
    free(logits);
    if (n_tokens == 0) die("--ppl: %s holds no text to evaluate", path);
    const double nll = total_nll / (double)n_tokens;
    printf("ppl: stories=%ld tokens=%ld bytes=%ld nll=%.6f ppl=%.4f bpb=%.6f\n", n_stories, n_tokens,
           n_bytes, nll, exp(nll), total_nll / log(2.0) / (double)n_bytes);
}

// --- main ------------------------------------------------------------------------

int main(int argc, char **argv) {
    Options o = parse_args(argc, argv);
    if (o.threads > 0) omp_set_num_threads(o.threads);

    char err[512];
    Model model;
    if (model_load(&model, o.model_path, err, sizeof err)) die("%s", err);
    const Config *c = &model.cfg;
    const int context = o.context ? o.context : c->max_seq_len;
    if (context > c->max_seq_len && !o.info)
        fprintf(stderr, "run: warning: context %d is longer than the model was built for (%d)\n", context,
                c->max_seq_len);

    if (o.info) {
        print_info(&model, context);
        model_free(&model);
        return 0;
    }

    // tokenizer: -z, else the one embedded in the checkpoint. Only --tokens with
    // numeric output (--print-ids, -n 0) can do without one.
    Tokenizer *tok = NULL;
    if (o.tokenizer_path) tok = tokenizer_from_file(o.tokenizer_path, err, sizeof err);
    else if (model.tokenizer_bytes) tok = tokenizer_from_bytes(model.tokenizer, model.tokenizer_bytes, err, sizeof err);
    else snprintf(err, sizeof err, "%s has no embedded tokenizer; pass -z PATH", o.model_path);
    const int need_text = !o.token_list || o.ppl_path || (o.steps > 0 && !o.print_ids);
    if (!tok && need_text) die("%s", err);
    if (tok && tokenizer_vocab_size(tok) != c->vocab_size)
        die("tokenizer vocabulary (%d pieces) does not match the model's vocab_size (%d)",
            tokenizer_vocab_size(tok), c->vocab_size);

    RunState state;
    if (state_create(&state, &model, context, PREFILL_CHUNK, o.mla_mode, err, sizeof err)) die("%s", err);

    if (o.ppl_path) {
        perplexity(&model, &state, tok, o.ppl_path);
        state_free(&state);
        tokenizer_free(tok);
        model_free(&model);
        return 0;
    }

    // --- prompt
    int *prompt, n_prompt;
    if (o.token_list) {
        prompt = parse_token_list(o.token_list, c->vocab_size, &n_prompt);
    } else {
        if (tokenizer_encode(tok, o.prompt ? o.prompt : "", c->bos_id >= 0, &prompt, &n_prompt, err, sizeof err))
            die("%s", err);
    }
    if (n_prompt == 0) die("the prompt is empty (and the model has no BOS token to start from)");
    if (n_prompt > context) die("the prompt has %d tokens but the context is %d (raise -c)", n_prompt, context);

    // --- prefill
    const size_t V = (size_t)c->vocab_size;
    float *all_logits = NULL;
    if (o.dump_logits) {
        all_logits = malloc(sizeof(float) * V * (size_t)n_prompt);
        if (!all_logits) die("out of memory for --dump-logits");
    }
    double t0 = now_seconds();
    float *logits = run_tokens(&model, &state, prompt, n_prompt, 0, all_logits);
    const double prefill_s = now_seconds() - t0;
    if (all_logits) {
        logits = all_logits + (size_t)(n_prompt - 1) * V;
        FILE *f = fopen(o.dump_logits, "wb");
        if (!f) die("cannot write %s: %s", o.dump_logits, strerror(errno));
        if (fwrite(all_logits, sizeof(float), V * (size_t)n_prompt, f) != V * (size_t)n_prompt || fclose(f))
            die("cannot write %s", o.dump_logits);
    }

    // --- decode
    Sampler sampler;
    if (sampler_create(&sampler, c->vocab_size, o.temperature, o.top_k, o.top_p, o.seed)) die("out of memory");
    TokenStream stream;
    token_stream_init(&stream);
    if (!o.print_ids && !o.token_list) { // echo the prompt as text
        char piece[256];
        for (int i = 0; i < n_prompt; i++) {
            const int len = token_stream_next(tok, &stream, prompt[i], piece, sizeof piece);
            fwrite(piece, 1, (size_t)len, stdout);
        }
        fflush(stdout);
    }
    int pos = n_prompt, generated = 0;
    t0 = now_seconds();
    while (generated < o.steps && pos <= context) {
        const int next = sampler_sample(&sampler, logits);
        generated++;
        if (o.print_ids) printf(generated > 1 ? " %d" : "%d", next);
        else {
            char piece[256];
            const int len = token_stream_next(tok, &stream, next, piece, sizeof piece);
            fwrite(piece, 1, (size_t)len, stdout);
        }
        fflush(stdout);
        if (next == c->eos_id || pos == context || generated == o.steps) break;
        logits = forward(&model, &state, &next, 1, pos, 0);
        pos++;
    }
    const double decode_s = now_seconds() - t0;
    if (o.print_ids || generated > 0) printf("\n");
    fflush(stdout);

    fprintf(stderr, "prefill: %d tokens, %.1f tok/s | decode: %d tokens, %.1f tok/s | KV cache: %zu bytes in use (%zu per token, %d tokens)\n",
            n_prompt, n_prompt / (prefill_s > 0 ? prefill_s : 1e-9), generated,
            generated > 1 ? (generated - 1) / (decode_s > 0 ? decode_s : 1e-9) : 0.0,
            model_kv_bytes_per_token(&model) * (size_t)pos, model_kv_bytes_per_token(&model), pos);

    free(all_logits);
    free(prompt);
    sampler_free(&sampler);
    state_free(&state);
    tokenizer_free(tok);
    model_free(&model);
    return 0;
}
