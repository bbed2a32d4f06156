// run: the command line. Parses flags, loads the model and tokenizer, and owns the
// loop, generate(): prompt -> prefill -> sample -> decode -> print. Also --chat, --info,
// --ppl, --dump-logits and the tokenizer tools. All the math is in model/ (forward()),
// attention/ and kernels/; docs/ATTENTION.md walks one token through them.
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "kernels/tensor.h" // kernels_set_isa: the CLI owns the instruction-set choice
#include "model/model.h"
#include "model/sampler.h"
#include "text/stories.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

#define DEFAULT_KV_TYPE DTYPE_F16 // --kv-type: measured in docs/QUANT.md
#define PREFILL_CHUNK 64 // tokens per forward() call when reading a prompt
#define MAX_THREADS 1024 // --threads and OMP_NUM_THREADS alike
#define MAX_TEXT_FILE_BYTES ((size_t)64 << 20) // -f, --tokens-file, JSON files

// --- options ---------------------------------------------------------------------

typedef struct {
    const char *model_path;
    const char *prompt;         // -p
    const char *token_list;     // --tokens
    const char *tokenizer_path; // -z
    const char *dump_logits;    // --dump-logits FILE
    const char *ppl_path;       // --ppl FILE
    double ppl_progress;        // --ppl-progress SECONDS between progress lines on stderr
    const char *prompt_file;    // -f FILE
    const char *tokens_file;    // --tokens-file FILE
    int check_tensors;          // --check-tensors
    const char *encode_file;    // --encode-file FILE (tokenizer only, no model; repeatable)
    const char **encode_files;  // every --encode-file, in order (n_encode_files)
    int n_encode_files;
    const char *decode_ids;     // --decode-ids "IDS" (tokenizer only, no model)
    int steps;                  // -n
    float temperature;          // -t
    float top_p;                // --top-p
    int top_k;                  // --top-k
    uint64_t seed;              // -s
    int context;                // -c (0 = the model's max_seq_len)
    int threads;                // --threads (0 = OpenMP default)
    int print_ids, info;
    MlaMode mla_mode;
    DType kv_type;              // --kv-type
    int chat;                   // --chat
    const char *system;         // --system TEXT
    const char *encode_chat;    // --encode-chat MESSAGES.json (the last one given)
    const char **encode_chats;  // every --encode-chat, in order (n_encode_chats)
    int n_encode_chats;
    const char *render_chat;    // --render-chat MESSAGES.json
    const char *chat_template;  // --chat-template FILE (compiled JSON)
    const char *today;          // --today YYYY-MM-DD
} Options;

static void usage(FILE *f) {
    fprintf(f,
            "usage: run MODEL.bin [options]\n"
            "       run -z TOKENIZER --encode-file FILE | --decode-ids \"ID ...\"\n"
            "  -p TEXT            prompt (BOS/EOS added as the tokenizer's config says)\n"
            "  --tokens \"ID ...\"  prompt as raw token ids (no BOS added)\n"
            "  -f FILE            prompt text from a file; --tokens-file FILE: ids from a file\n"
            "  -n N               tokens to generate (default 256; 0 = only read the prompt)\n"
            "  -t F               temperature (default 0.8; 0 = greedy)\n"
            "  --top-p F          nucleus sampling threshold (default 0.9; 1 = off)\n"
            "  --top-k N          sample among the N most likely tokens (default 0 = off)\n"
            "  -s N               random seed (default: time)\n"
            "  -c N               context length = KV-cache size (default: the model's)\n"
            "  -z PATH            tokenizer: a SentencePiece .model, a tokenizer.json (its\n"
            "                     tokenizer_config.json beside it is read), or a .bin with one\n"
            "                     embedded (default: the one in MODEL.bin)\n"
            "  --encode-file FILE print the ids of FILE's bytes (no BOS/EOS) and exit; repeat\n"
            "                     it for several files (one line each)\n"
            "  --decode-ids \"IDS\" print the text of the ids and exit\n"
            "  --mla MODE         absorbed (default) or naive MLA attention\n"
            "  --kv-type T        KV-cache type: f16 (default), bf16, f32 or q8_0\n"
            "  --threads N        OpenMP threads\n"
            "  --print-ids        print generated token ids instead of text\n"
            "  --dump-logits FILE write float32 logits of every prompt position\n"
            "  --ppl FILE         perplexity on a text file (stories split by <|endoftext|>)\n"
            "  --ppl-progress S   seconds between --ppl progress lines on stderr (default 10)\n"
            "  --check-tensors    verify at load that every stored weight is finite\n"
            "  --info             print a JSON summary of the model and exit\n"
            "  --chat             chat on stdin/stdout, one user turn per line (-n: tokens per reply)\n"
            "  --system TEXT      the system message of --chat\n"
            "  --encode-chat FILE print the ids of a JSON list of {role, content} messages rendered\n"
            "                     with the chat template and its generation prompt, and exit\n"
            "                     (repeat it for several files: one line each)\n"
            "  --render-chat FILE print that rendering as text (no tokenizer needed) and exit\n"
            "  --chat-template F  compiled chat template (scripts/chat_template.py compile), instead\n"
            "                     of the model's; with it MODEL.bin is optional for --render-chat,\n"
            "                     and for --encode-chat with -z\n"
            "  --today YYYY-MM-DD the date the template's strftime_now sees (default: today)\n"

            "environment: MIXATTN_ISA=scalar|avx2|avx512 forces the kernels' instruction set\n"
            "  (default: the best this CPU has)\n");
}

// The CLI's end for every bad input: one line "run: error: ..." on stderr, exit 1.
__attribute__((format(printf, 1, 2), noreturn))
static void die(const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    error_vformat(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "run: error: %s\n", msg);
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
    o.kv_type = DEFAULT_KV_TYPE;
    o.steps = 256;
    o.temperature = 0.8f;
    o.top_p = 0.9f;
    o.seed = (uint64_t)time(NULL);
    o.ppl_progress = 10.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); exit(0); }
        if (!strcmp(a, "--print-ids")) { o.print_ids = 1; continue; }
        if (!strcmp(a, "--info")) { o.info = 1; continue; }
        if (!strcmp(a, "--check-tensors")) { o.check_tensors = 1; continue; }
        if (!strcmp(a, "--chat")) { o.chat = 1; continue; }
        if (a[0] != '-') {
            if (o.model_path) die("unexpected argument '%s' (the model is %s)", a, o.model_path);
            o.model_path = a;
            continue;
        }
        static const char *takes_value[] = {"-p", "--tokens", "-n", "-t", "--top-p", "--top-k", "-s", "-c",
                                            "-z", "--threads", "--dump-logits", "--ppl", "--mla", "--kv-type",
                                            "--system", "--encode-chat", "--render-chat",
                                            "--chat-template", "--today", "--encode-file", "--decode-ids",
                                            "-f", "--tokens-file", "--ppl-progress"};
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
        else if (!strcmp(a, "--threads")) o.threads = (int)parse_int(a, v, 1, MAX_THREADS);
        else if (!strcmp(a, "-f")) o.prompt_file = v;
        else if (!strcmp(a, "--tokens-file")) o.tokens_file = v;
        else if (!strcmp(a, "--ppl-progress")) o.ppl_progress = parse_float(a, v, 0.0f, 1e6f);
        else if (!strcmp(a, "--dump-logits")) o.dump_logits = v;
        else if (!strcmp(a, "--ppl")) o.ppl_path = v;
        else if (!strcmp(a, "--kv-type")) {
            if (kv_type_from_name(v, &o.kv_type)) die("--kv-type must be f32, bf16, f16 or q8_0, got '%s'", v);
        }
        else if (!strcmp(a, "--system")) o.system = v;
        else if (!strcmp(a, "--encode-chat")) {
            if (!o.encode_chats && !(o.encode_chats = malloc(sizeof(char *) * (size_t)argc))) die("out of memory");
            o.encode_chat = o.encode_chats[o.n_encode_chats++] = v;
        }
        else if (!strcmp(a, "--render-chat")) o.render_chat = v;
        else if (!strcmp(a, "--chat-template")) o.chat_template = v;
        else if (!strcmp(a, "--today")) o.today = v;
        else if (!strcmp(a, "--encode-file")) {
            if (!o.encode_files && !(o.encode_files = malloc(sizeof(char *) * (size_t)argc))) die("out of memory");
            o.encode_file = o.encode_files[o.n_encode_files++] = v;
        }
        else if (!strcmp(a, "--decode-ids")) o.decode_ids = v;
        else if (!strcmp(a, "--mla")) {
            if (!strcmp(v, "absorbed")) o.mla_mode = MLA_ABSORBED;
            else if (!strcmp(v, "naive")) o.mla_mode = MLA_NAIVE;
            else die("--mla must be 'absorbed' or 'naive', got '%s'", v);
        }
    }
    if (o.encode_file || o.decode_ids) {
        if (o.encode_file && o.decode_ids) die("give either --encode-file or --decode-ids, not both");
        if (!o.tokenizer_path && !o.model_path) die("--encode-file/--decode-ids need -z TOKENIZER");
        return o;
    }
    const int chat_modes = o.chat + !!o.encode_chat + !!o.render_chat;
    if (chat_modes > 1) die("give only one of --chat, --encode-chat, --render-chat");
    if (chat_modes && (o.prompt || o.token_list || o.prompt_file || o.tokens_file || o.ppl_path ||
                       o.dump_logits || o.info))
        die("--chat, --encode-chat and --render-chat do not combine with -p, -f, --tokens, "
            "--tokens-file, --ppl, --dump-logits or --info");
    if (o.system && !o.chat) die("--system is only for --chat");
    const int model_optional = o.chat_template && (o.render_chat || (o.encode_chat && o.tokenizer_path));
    if (!o.model_path && !model_optional) { usage(stderr); die("no model given"); }
    if (!!o.prompt + !!o.token_list + !!o.prompt_file + !!o.tokens_file > 1)
        die("give only one of -p, -f, --tokens and --tokens-file");
    return o;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// "12 7 99" -> ids, each checked against the vocabulary
static int *parse_id_list(const char *flag, const char *s, int vocab_size, int *n_out) {
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
        if (end == p || errno) die("%s: '%.24s' is not an integer (give ids separated by spaces)", flag, p);
        if (v < 0 || v >= vocab_size) die("%s: id %ld is outside the vocabulary [0, %d)", flag, v, vocab_size);
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

// --- --encode-file / --decode-ids: the tokenizer alone ------------------------------

static char *read_whole_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0, got;
    char *buf = malloc(cap);
    if (!buf) die("out of memory");
    while ((got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            char *grown = cap < ((size_t)1 << 40) ? realloc(buf, cap *= 2) : NULL;
            if (!grown) die("out of memory reading %s", path);
            buf = grown;
        }
    }
    if (ferror(f)) die("cannot read %s (is it a directory?)", path);
    fclose(f);
    *n = len;
    return buf;
}

// The tokenizer embedded in a loaded checkpoint (NULL and err set if it has none).
static Tokenizer *embedded_tokenizer(const Model *m, const char *path, char *err, size_t errlen) {
    if (!m->tokenizer_bytes) {
        snprintf(err, errlen, "%s has no embedded tokenizer; pass -z PATH", path);
        return NULL;
    }
    Tokenizer *t = tokenizer_from_blob(m->tokenizer_kind, m->tokenizer, m->tokenizer_bytes, m->tokenizer_config,
                                       m->tokenizer_config_bytes, err, errlen);
    if (!t) {
        char *msg = strdup(err);
        if (msg) snprintf(err, errlen, "%s: %s", path, msg);
        free(msg);
    }
    return t;
}

// -z PATH: a tokenizer.json, a SentencePiece .model, or a mixattn .bin with one embedded.
static Tokenizer *tokenizer_from_path(const char *path, char *err, size_t errlen) {
    char magic[8] = {0};
    struct stat st; // a FIFO would block fopen: tokenizer_from_file refuses non-regular files
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return tokenizer_from_file(path, err, errlen);
    FILE *f = fopen(path, "rb");
    const int is_bin = f && fread(magic, 1, 8, f) == 8 && !memcmp(magic, "MIXATTN\0", 8);
    if (f) fclose(f);
    if (!is_bin) return tokenizer_from_file(path, err, errlen);
    Model m;
    if (model_load(&m, path, err, errlen)) return NULL;
    Tokenizer *t = embedded_tokenizer(&m, path, err, errlen);
    model_free(&m);
    return t;
}

// HF encode(text, add_special_tokens=False) of the file's bytes, or decode(ids) (with
// clean_up_tokenization_spaces where the tokenizer's config sets it).
static int tokenizer_tool(const Options *o, const Tokenizer *tok) {
    char err[512];
    for (int f = 0; f < o->n_encode_files; f++) { // one line per file
        size_t len;
        char *text = read_whole_file(o->encode_files[f], &len);
        int *ids, n;
        if (tokenizer_encode_len(tok, text, len, 0, &ids, &n, err, sizeof err)) die("%s: %s", o->encode_files[f], err);
        for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        free(ids);
        free(text);
    }
    if (o->decode_ids) {
        int n;
        int *ids = parse_id_list("--decode-ids", o->decode_ids, tokenizer_vocab_size(tok), &n);
        size_t len;
        char *text = tokenizer_decode_ex(tok, ids, n, 0, &len);
        if (!text) die("--decode-ids: the tokenizer cannot decode these ids");
        if (tokenizer_cleans_up_spaces(tok)) len = tokenizer_clean_up_spaces(text, len); // as transformers
        fwrite(text, 1, len, stdout);
        free(text);
        free(ids);
    }
    if (fflush(stdout) || ferror(stdout)) die("cannot write the output");
    return 0;
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

static void print_info(const Model *m, int context, DType kv_type) {
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
           "  \"sliding_window\": %d,\n  \"tokenizer_embedded\": %s,\n  \"tokenizer_kind\": \"%s\",\n"
           "  \"tokenizer_config_bytes\": %zu,\n  \"layers\": [\n",
           m->format_version, layout, c->dim, c->n_layers, c->vocab_size, c->max_seq_len,
           c->hidden_dim, m->n_params, model_active_params(m),
           c->tied_embeddings ? "true" : "false", c->norm_eps, c->bos_id, c->eos_id, c->rope.theta,
           pairing[c->rope.pairing], scaling[c->rope.scaling], c->rope.factor, c->sliding_window,
           m->tokenizer_bytes ? "true" : "false",
           m->tokenizer_kind == 2 ? "tokenizer.json" : m->tokenizer_kind == 1 ? "sentencepiece" : "none",
           m->tokenizer_config_bytes);
    for (int n = 0; n < c->n_layers; n++) {
        const Layer *l = &m->layers[n];
        printf("    {\"layer\": %d, \"kind\": \"%s\", ", n, layer_kind_name(l));
        if (l->kind == ATTN_GQA)
            printf("\"n_heads\": %d, \"n_kv_heads\": %d, \"head_dim\": %d, \"rope_dim\": %d, ",
                   l->gqa.n_heads, l->gqa.n_kv_heads, l->gqa.head_dim, l->rope->rope_dim);
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
        printf("\"kv_bytes_per_token\": %zu}%s\n", layer_kv_bytes_per_token(l, kv_type),
               n + 1 < c->n_layers ? "," : "");
    }
    const size_t per_token = model_kv_bytes_per_token(m, kv_type);
    printf("  ],\n  \"kv_type\": \"%s\",\n  \"kv_bytes_per_token\": %zu,\n  \"context\": %d,\n"
           "  \"kv_bytes_at_context\": %zu,\n", dtype_name(kv_type), per_token, context,
           per_token * (size_t)context);
    // the weights: each tensor's stored type, and what one decode step reads of them
    printf("  \"file_bytes\": %zu,\n  \"weights_mapped\": %s,\n  \"huge_page_bytes\": %zu,\n"
           "  \"reread_for_huge_pages\": %s,\n  \"weight_bytes_per_token\": %llu,\n"
           "  \"tensors\": [\n", m->file_bytes, m->file_mapped ? "true" : "false", m->file_huge_bytes,
           m->file_reread ? "true" : "false", (unsigned long long)m->weight_bytes_per_token);
    for (int i = 0; i < m->n_tensors; i++) {
        const TensorInfo *t = &m->tensors[i];
        printf("    {\"name\": \"%s\", \"dtype\": \"%s\", \"shape\": [", t->name, dtype_name(t->dtype));
        for (int k = 0; k < t->ndim; k++) printf("%s%llu", k ? ", " : "", (unsigned long long)t->shape[k]);
        printf("], \"bytes\": %llu, \"bytes_per_token\": %llu}%s\n", (unsigned long long)t->nbytes,
               (unsigned long long)t->bytes_per_token, i + 1 < m->n_tensors ? "," : "");
    }
    printf("  ]\n}\n");
}

// --- running a sequence ----------------------------------------------------------

// Feeds ids[0..n) at positions pos0.. in chunks of s->max_tokens and returns the last
// token's logits [V]. every_logits, when not NULL, receives every position's: [n, V].
static const float *run_tokens(const Model *m, RunState *s, const int *ids, int n, int pos0,
                               float *every_logits) {
    const float *last = NULL;
    const size_t V = (size_t)m->cfg.vocab_size;
    for (int done = 0; done < n;) {
        const int chunk = n - done < s->max_tokens ? n - done : s->max_tokens;
        const int n_logits = every_logits ? chunk : 1;
        const float *logits = forward(m, s, ids + done, chunk, pos0 + done, n_logits); // [n_logits, V]
        if (every_logits) memcpy(every_logits + (size_t)done * V, logits, sizeof(float) * (size_t)chunk * V);
        last = logits + (size_t)(n_logits - 1) * V;
        done += chunk;
    }
    return last;
}

// --- --ppl -------------------------------------------------------------------------

// A file read whole, up to cap bytes (a larger one, or /dev/zero, is an error, never
// unbounded memory); NUL-terminated, and refused if it holds a NUL byte (it is text).
// Errors start with "flag: " when flag is given.
static char *read_text_file(const char *flag, const char *path, size_t cap) {
    const char *sep = flag ? ": " : "";
    if (!flag) flag = "";
    struct stat st;
    if (stat(path, &st) != 0) die("%s%scannot open %s: %s", flag, sep, path, strerror(errno));
    if (S_ISDIR(st.st_mode)) die("%s%s%s is a directory", flag, sep, path);
    FILE *f = fopen(path, "rb");
    if (!f) die("%s%scannot open %s: %s", flag, sep, path, strerror(errno));
    size_t len = 0, size = 1 << 16;
    char *buf = malloc(size + 1);
    if (!buf) die("out of memory");
    for (;;) {
        if (len == size) {
            if (size >= cap) die("%s%s%s is larger than %zu bytes", flag, sep, path, cap);
            size = size * 2 < cap ? size * 2 : cap;
            char *grown = realloc(buf, size + 1);
            if (!grown) die("out of memory reading %s", path);
            buf = grown;
        }
        const size_t got = fread(buf + len, 1, size - len, f);
        if (got == 0) break;
        const char *nul = memchr(buf + len, 0, got); // checked as read: /dev/zero fails at once
        if (nul) die("%s%s%s holds a NUL byte at offset %zu (it must be text)", flag, sep, path, (size_t)(nul - buf));
        len += got;
    }
    if (ferror(f)) die("%s%scannot read %s: %s", flag, sep, path, strerror(errno));
    fclose(f);
    buf[len] = 0;
    return buf;
}

// a JSON file (chat template, messages): the same limits
static char *read_file(const char *path, size_t *n) {
    char *text = read_text_file(NULL, path, MAX_TEXT_FILE_BYTES);
    *n = strlen(text);
    return text;
}

// Stops with an error if the logits hold NaN or Inf: sampling or scoring them
// would print token 0 forever or report ppl=nan.
static void check_logits(const float *logits, size_t n, int pos) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(logits[i]))
            die("the model produced a non-finite logit (%g for token %zu) at position %d: its weights "
                "hold NaN/Inf or overflow (run with --check-tensors)", logits[i], i, pos);
}

// --- --ppl -------------------------------------------------------------------------

// Teacher-forced NLL over every story of the file: s = [BOS] text [EOS], predict
// s[i] from s[:i]; a story longer than the context runs in windows of `context`
// input positions, each from an empty cache (docs/TRAINING.md defines the same).
// The file is streamed one story at a time (text/stories.h), so memory stays bounded
// whatever its size; every `progress` seconds a line on stderr tells how far it is.
static void perplexity(const Model *m, RunState *s, Tokenizer *tok, const char *path, double progress) {
    struct stat st;
    if (stat(path, &st) != 0) die("--ppl: cannot open %s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) die("--ppl: %s is a directory", path);
    FILE *f = fopen(path, "rb");
    if (!f) die("--ppl: cannot open %s: %s", path, strerror(errno));
    const double total_bytes = S_ISREG(st.st_mode) ? (double)st.st_size : 0.0; // for the ETA
    const size_t V = (size_t)m->cfg.vocab_size;
    const int T = s->context;
    float *logits = malloc(sizeof(float) * (size_t)T * V);
    if (!logits) die("out of memory");
    double total_nll = 0.0;
    long n_tokens = 0, n_stories = 0, n_bytes = 0;
    StoryReader reader;
    story_reader_init(&reader, f, STORY_MAX_BYTES_DEFAULT);
    const double t0 = now_seconds();
    double last_report = t0;
    const char *story;
    size_t slen;
    char err[512];
    int rc;
    while ((rc = story_reader_next(&reader, &story, &slen, err, sizeof err)) == 1) {
        int *ids, n_ids;
        if (tokenizer_encode(tok, story, 0, &ids, &n_ids, err, sizeof err)) die("--ppl: %s", err);
        int *seq = malloc(sizeof(int) * ((size_t)n_ids + 2));
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
                check_logits(row, V, w + i);
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
        const double now = now_seconds();
        if (now - last_report >= progress) {
            last_report = now;
            const double done = (double)reader.offset, el = now - t0;
            char where[128];
            if (total_bytes > 0)
                snprintf(where, sizeof where, "%.0f of %.0f bytes (%.1f%%), ETA %.0f s", done, total_bytes,
                         100.0 * done / total_bytes, done > 0 ? el * (total_bytes - done) / done : 0.0);
            else
                snprintf(where, sizeof where, "%.0f bytes", done);
            fprintf(stderr, "ppl: progress: stories=%ld tokens=%ld ppl=%.4f | %.0f s, %s\n", n_stories,
                    n_tokens, n_tokens ? exp(total_nll / (double)n_tokens) : 0.0, el, where);
        }
    }
    if (rc < 0) die("--ppl: %s: %s", path, err);
    story_reader_free(&reader);
    fclose(f);
    free(logits);
    if (n_tokens == 0) die("--ppl: %s holds no text to evaluate", path);
    const double nll = total_nll / (double)n_tokens;
    printf("ppl: stories=%ld tokens=%ld bytes=%ld nll=%.6f ppl=%.4f bpb=%.6f\n", n_stories, n_tokens,
           n_bytes, nll, exp(nll), total_nll / log(2.0) / (double)n_bytes);
}

// --- generate -------------------------------------------------------------------

// The prompt, then up to o->steps new tokens: prefill the prompt (dumping its logits
// for --dump-logits), echo it, then sample -> print -> forward one token at a time
// until EOS, the step count or the context is reached. Stats go to stderr.
static void generate(const Model *m, RunState *s, Tokenizer *tok, const Options *o,
                     const int *prompt, int n_prompt) {
    const Config *c = &m->cfg;
    const int context = s->context;

    // --- prefill
    const size_t V = (size_t)c->vocab_size;
    float *every_logits = NULL; // [n_prompt, V] for --dump-logits
    if (o->dump_logits) {
        every_logits = malloc(sizeof(float) * V * (size_t)n_prompt);
        if (!every_logits) die("out of memory for --dump-logits");
    }
    double t0 = now_seconds();
    const float *logits = run_tokens(m, s, prompt, n_prompt, 0, every_logits); // [V]
    const double prefill_s = now_seconds() - t0;
    if (every_logits) {
        FILE *f = fopen(o->dump_logits, "wb");
        if (!f) die("cannot write %s: %s", o->dump_logits, strerror(errno));
        if (fwrite(every_logits, sizeof(float), V * (size_t)n_prompt, f) != V * (size_t)n_prompt || fclose(f))
            die("cannot write %s", o->dump_logits);
    }

    // --- decode
    Sampler sampler;
    if (sampler_create(&sampler, c->vocab_size, o->temperature, o->top_k, o->top_p, o->seed))
        die("out of memory");
    TokenStream stream;
    token_stream_init(&stream);
    if (!o->print_ids && !o->token_list) { // echo the prompt as text
        char piece[256];
        for (int i = 0; i < n_prompt; i++) {
            const int len = token_stream_next(tok, &stream, prompt[i], piece, sizeof piece);
            fwrite(piece, 1, (size_t)len, stdout);
        }
        fflush(stdout);
    }
    int pos = n_prompt, generated = 0;
    t0 = now_seconds();
    while (generated < o->steps && pos <= context) {
        check_logits(logits, V, pos - 1);
        const int next = sampler_sample(&sampler, logits);
        generated++;
        if (o->print_ids) printf(generated > 1 ? " %d" : "%d", next);
        else {
            char piece[256];
            const int len = token_stream_next(tok, &stream, next, piece, sizeof piece);
            fwrite(piece, 1, (size_t)len, stdout);
        }
        fflush(stdout);
        const int end = next == c->eos_id || (tok && tokenizer_is_end(tok, next));
        if (end || pos == context || generated == o->steps) break;
        logits = forward(m, s, &next, 1, pos, 1); // [1, V]
        pos++;
    }
    const double decode_s = now_seconds() - t0;
    if (o->print_ids || generated > 0) printf("\n");
    fflush(stdout);

    const size_t per_token = model_kv_bytes_per_token(m, s->kv_type);
    fprintf(stderr, "prefill: %d tokens, %.1f tok/s | decode: %d tokens, %.1f tok/s | "
            "KV cache: %zu bytes in use (%zu per token, %d tokens, %s)\n",
            n_prompt, n_prompt / (prefill_s > 0 ? prefill_s : 1e-9), generated,
            generated > 1 ? (generated - 1) / (decode_s > 0 ? decode_s : 1e-9) : 0.0,
            per_token * (size_t)pos, per_token, pos, dtype_name(s->kv_type));
    free(every_logits);
    sampler_free(&sampler);
}

// --- chat ------------------------------------------------------------------------

// --today YYYY-MM-DD, else the local date (what Python's datetime.now() gives the template)
static struct tm chat_date(const char *today) {
    struct tm tm = {0};
    if (today) {
        int y, mo, d;
        char extra;
        if (sscanf(today, "%d-%d-%d%c", &y, &mo, &d, &extra) != 3 || y < 1 || y > 9999 || mo < 1 ||
            mo > 12 || d < 1 || d > 31)
            die("--today needs a date YYYY-MM-DD, got '%s'", today);
        tm.tm_year = y - 1900, tm.tm_mon = mo - 1, tm.tm_mday = d, tm.tm_hour = 12, tm.tm_isdst = -1;
        const struct tm want = tm;
        if (mktime(&tm) == (time_t)-1 || tm.tm_mday != want.tm_mday) die("--today: no such date '%s'", today);
        return tm;
    }
    const time_t now = time(NULL);
    if (!localtime_r(&now, &tm)) die("cannot read the local date");
    return tm;
}

// --chat-template FILE, else the one compiled into the checkpoint's tokenizer config
// (record "chat_template"; "chat_template_refused" holds why the converter refused it)
static ChatTemplate *open_chat_template(const Options *o, const Tokenizer *tok, const char *where) {
    char err[512];
    size_t n = 0;
    char *json = NULL;
    if (o->chat_template) {
        json = read_file(o->chat_template, &n);
        where = o->chat_template;
    } else {
        const char *why = tok ? tokenizer_config_record(tok, "chat_template_refused", &n) : NULL;
        if (why) {
            char reason[301];
            const size_t k = n < 300 ? n : 300;
            for (size_t i = 0; i < k; i++) reason[i] = (unsigned char)why[i] < 0x20 ? ' ' : why[i];
            reason[k] = 0;
            die("%s: its chat template was refused at conversion: %s", where, reason);
        }
        const char *rec = tok ? tokenizer_config_record(tok, "chat_template", &n) : NULL;
        if (!rec)
            die("%s has no chat template (convert the model from a folder whose tokenizer_config.json has "
                "a chat_template, or pass --chat-template)", where);
        if (!(json = malloc(n + 1))) die("out of memory");
        memcpy(json, rec, n);
        json[n] = 0;
    }
    ChatTemplate *t = chat_template_parse(json, n, err, sizeof err);
    free(json);
    if (!t) die("%s: %s", where, err);
    return t;
}

static ChatMessage *read_messages(const char *path, int *n) {
    char err[512];
    size_t len;
    char *json = read_file(path, &len);
    ChatMessage *m;
    if (chat_messages_parse(json, len, &m, n, err, sizeof err)) die("%s: %s", path, err);
    free(json);
    return m;
}

// transformers matches special tokens written in the text (its added-tokens split) before
// SentencePiece runs; the SentencePiece library does not. So a rendering that writes
// BOS/EOS/unk as text cannot be encoded exactly through a tokenizer.model: refuse it.
static void check_spm_specials(const Tokenizer *tok, const char *text, const char *where) {
    if (tokenizer_kind(tok) != TOKENIZER_SPM) return;
    const int ids[3] = {tokenizer_bos_id(tok), tokenizer_eos_id(tok), tokenizer_unk_id(tok)};
    for (int i = 0; i < 3; i++) {
        const char *piece = ids[i] >= 0 ? tokenizer_piece(tok, ids[i]) : "";
        if (piece[0] && strstr(text, piece))
            die("%s: the chat template writes %s, which a SentencePiece tokenizer.model would split "
                "into pieces, not match as transformers does (convert the model with its "
                "tokenizer.json)", where, piece);
    }
}

// --render-chat / --encode-chat: the conversation of a messages file, as text or as
// ids (one line per --encode-chat file, in order)
static void print_chat(const ChatTemplate *ct, Tokenizer *tok, const Options *o) {
    char err[512];
    const struct tm today = chat_date(o->today);
    const int n_files = o->render_chat ? 1 : o->n_encode_chats;
    for (int f = 0; f < n_files; f++) {
        const char *path = o->render_chat ? o->render_chat : o->encode_chats[f];
        int n;
        ChatMessage *m = read_messages(path, &n);
        size_t len;
        char *text = chat_template_render(ct, m, n, &today, &len, err, sizeof err);
        if (!text) die("%s: %s", path, err);
        if (o->render_chat) {
            fwrite(text, 1, len, stdout);
        } else {
            int *ids, n_ids;
            check_spm_specials(tok, text, path);
            if (tokenizer_encode(tok, text, 0, &ids, &n_ids, err, sizeof err)) die("%s: %s", path, err);
            for (int i = 0; i < n_ids; i++) printf(i ? " %d" : "%d", ids[i]);
            printf("\n");
            free(ids);
        }
        free(text);
        chat_messages_free(m, n);
    }
    if (fflush(stdout) || ferror(stdout)) die("cannot write the output");
}

// The id of a special token's text ("" or not one token: -1).
static int single_token(Tokenizer *tok, const char *text) {
    int *ids, n, id = -1;
    if (!text[0] || tokenizer_encode(tok, text, 0, &ids, &n, NULL, 0)) return -1;
    if (n == 1) id = ids[0];
    free(ids);
    return id;
}

// One line of stdin (a user turn) into *line, grown as needed up to CHAT_MAX_LINE bytes:
// its length without the trailing "\n" or "\r\n", or -1 at EOF. Longer lines are refused
// (no unbounded buffer); a last line without a newline counts.
#define CHAT_MAX_LINE ((size_t)1 << 20)
static long read_turn(char **line, size_t *cap) {
    size_t len = 0;
    int ch;
    while ((ch = getc(stdin)) != EOF && ch != '\n') {
        if (len == CHAT_MAX_LINE) die("--chat: a line of stdin is longer than %zu bytes", CHAT_MAX_LINE);
        if (len + 2 > *cap) {
            const size_t want = *cap ? *cap * 2 : 256;
            char *grown = realloc(*line, want);
            if (!grown) die("out of memory");
            *line = grown, *cap = want;
        }
        (*line)[len++] = (char)ch;
    }
    if (ferror(stdin)) die("--chat: cannot read stdin");
    if (ch == EOF && len == 0) return -1;
    if (!*line && !(*line = malloc(*cap = 1))) die("out of memory"); // an empty first line
    if (len && (*line)[len - 1] == '\r') len--;
    (*line)[len] = 0;
    if (strlen(*line) != len) die("--chat: a line holds a NUL byte");
    return (long)len;
}

// --chat: read a user turn per line, render it with the template (the whole first
// turn, then only what follows the last reply), prefill only those new tokens on top
// of the KV cache, and stream the reply until an end id (EOS or the template's end
// of turn, never fed to the model: the next turn's text starts with the turn's
// closing), -n tokens, or a full context (an error: the conversation no longer fits).
static void chat(const Model *m, RunState *s, Tokenizer *tok, const ChatTemplate *ct, const Options *o) {
    const Config *c = &m->cfg;
    char err[512];
    const struct tm today = chat_date(o->today);
    if (o->system && !chat_template_accepts_system(ct)) die("this model's chat template does not accept a system message");
    const int end_of_turn = single_token(tok, chat_template_end_of_turn(ct));
    Sampler sampler;
    if (sampler_create(&sampler, c->vocab_size, o->temperature, o->top_k, o->top_p, o->seed)) die("out of memory");
    const int interactive = isatty(0) && isatty(2);
    char *line = NULL;
    size_t cap = 0;
    int pos = 0, n_history = 0, turn = 0;
    for (;;) {
        if (interactive) fprintf(stderr, "> ");
        if (read_turn(&line, &cap) < 0) break; // EOF: done
        // the new text: the first turn whole, later ones after the last reply
        char *text;
        size_t text_len;
        if (n_history == 0) {
            ChatMessage msgs[2] = {{CHAT_SYSTEM, (char *)o->system}, {CHAT_USER, line}};
            const int first = o->system ? 0 : 1;
            text = chat_template_render(ct, msgs + first, 2 - first, &today, &text_len, err, sizeof err);
        } else {
            text = chat_template_next_turn(ct, line, n_history, &today, &text_len, err, sizeof err);
        }
        if (!text) die("--chat: %s", err);
        int *ids, n_ids;
        check_spm_specials(tok, text, "--chat");
        if (tokenizer_encode(tok, text, 0, &ids, &n_ids, err, sizeof err)) die("--chat: %s", err);
        free(text);
        if (pos + n_ids >= s->context)
            die("--chat: the conversation no longer fits the context (%d tokens so far, this turn needs "
                "%d more, the context is %d; raise -c)", pos, n_ids, s->context);
        const float *logits = run_tokens(m, s, ids, n_ids, pos, NULL); // [V]
        pos += n_ids;
        free(ids);
        n_history += (n_history == 0 && o->system) ? 2 : 1;
        // the reply
        TokenStream stream;
        token_stream_init(&stream);
        int generated = 0;
        for (; generated < o->steps; generated++) {
            check_logits(logits, (size_t)c->vocab_size, pos - 1);
            const int next = sampler_sample(&sampler, logits);
            if (next == c->eos_id || next == end_of_turn || tokenizer_is_end(tok, next)) break;
            if (o->print_ids) {
                printf(generated ? " %d" : "%d", next);
            } else {
                char piece[256];
                const int plen = token_stream_next(tok, &stream, next, piece, sizeof piece);
                fwrite(piece, 1, (size_t)plen, stdout);
            }
            fflush(stdout);
            if (pos + 1 >= s->context)
                die("--chat: the context (%d tokens) is full; raise -c", s->context);
            logits = forward(m, s, &next, 1, pos, 1); // [1, V]
            pos++;
        }
        printf("\n");
        fflush(stdout);
        n_history++;
        fprintf(stderr, "chat: turn %d: prefilled %d tokens, generated %d, %d tokens in the KV cache\n",
                ++turn, n_ids, generated, pos);
    }
    free(line);
    sampler_free(&sampler);
}

// --- main ------------------------------------------------------------------------

// The model file shrank (or its storage failed) while it is mapped: the kernel raises
// SIGBUS on the next access. One clear line instead of a crash (write/_exit only:
// async-signal-safe).
static void on_sigbus(int sig) {
    (void)sig;
    static const char msg[] = "run: error: the model file changed size or became unreadable while in use "
                              "(SIGBUS); do not truncate or rewrite a model in place while ./run reads it\n";
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    (void)ignored;
    _exit(1);
}

// -z, else the one embedded in the checkpoint. Only --tokens with numeric output
// (--print-ids, -n 0) can do without one: then NULL.
static Tokenizer *open_tokenizer(const Model *m, const Options *o) {
    char err[512];
    Tokenizer *tok = NULL;
    if (o->tokenizer_path) tok = tokenizer_from_path(o->tokenizer_path, err, sizeof err);
    else tok = embedded_tokenizer(m, o->model_path, err, sizeof err);
    const int need_text = !o->render_chat && (!o->token_list || o->ppl_path || (o->steps > 0 && !o->print_ids));
    if (!tok && need_text) die("%s", err);
    // a tokenizer.json may have fewer ids than the model's (padded) embedding, never more
    if (tok && (tokenizer_kind(tok) == TOKENIZER_HF ? tokenizer_vocab_size(tok) > m->cfg.vocab_size
                                                    : tokenizer_vocab_size(tok) != m->cfg.vocab_size))
        die("tokenizer vocabulary (%d pieces) does not match the model's vocab_size (%d)",
            tokenizer_vocab_size(tok), m->cfg.vocab_size);
    return tok;
}

// --tokens as given, or -p encoded (BOS as the tokenizer's config or the model says);
// never empty and never longer than the context.
static int *read_prompt(const Model *m, Tokenizer *tok, const Options *o, int context, int *n_prompt) {
    const Config *c = &m->cfg;
    char err[512];
    int *prompt;
    if (o->token_list) {
        const char *flag = o->tokens_file ? "--tokens-file" : "--tokens";
        prompt = parse_id_list(flag, o->token_list, c->vocab_size, n_prompt);
        if (*n_prompt == 0) die("%s gave no token ids (BOS is not added to raw ids)", flag);
    } else {
        // BOS as the tokenizer's config says (tokenizer.json); SentencePiece: as the model's
        const int add_special = tokenizer_kind(tok) == TOKENIZER_HF ? 1 : c->bos_id >= 0;
        if (tokenizer_encode(tok, o->prompt ? o->prompt : "", add_special, &prompt, n_prompt, err, sizeof err))
            die("%s", err);
    }
    if (*n_prompt == 0) die("the prompt is empty and the model has no BOS token to start from");
    if (*n_prompt > context) die("the prompt has %d tokens but the context is %d (raise -c)", *n_prompt, context);
    return prompt;
}

int main(int argc, char **argv) {
    Options o = parse_args(argc, argv);
    // OMP_NUM_THREADS is capped like --threads (libgomp crashes trying to start 100000)
    if (o.threads > 0) omp_set_num_threads(o.threads);
    else if (omp_get_max_threads() > MAX_THREADS) {
        fprintf(stderr, "run: warning: OMP_NUM_THREADS asks for %d threads; using %d\n", omp_get_max_threads(),
                MAX_THREADS);
        omp_set_num_threads(MAX_THREADS);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigbus;
    sigaction(SIGBUS, &sa, NULL);
    // prompts too long for argv (the kernel's 128 KiB per argument) come from files
    char *prompt_text = NULL, *token_text = NULL;
    if (o.prompt_file) o.prompt = prompt_text = read_text_file("-f", o.prompt_file, MAX_TEXT_FILE_BYTES);
    if (o.tokens_file) o.token_list = token_text = read_text_file("--tokens-file", o.tokens_file, MAX_TEXT_FILE_BYTES);
    // The kernels' instruction set: the best this CPU has, unless MIXATTN_ISA names another
    // (scalar for valgrind, which cannot decode AVX-512). Chosen once, here, before any work.
    const char *isa = getenv("MIXATTN_ISA");
    if (isa && *isa) {
        const int i = kernels_parse_isa(isa);
        if (i < 0) die("MIXATTN_ISA=%s: expected scalar, avx2 or avx512", isa);
        if (kernels_set_isa((KernelIsa)i))
            die("MIXATTN_ISA=%s: this CPU cannot run it (its best is %s)", isa,
                kernels_isa_name(kernels_best_isa()));
    }

    char err[512];
    if ((o.encode_file || o.decode_ids) && o.tokenizer_path) {
        Tokenizer *tok = tokenizer_from_path(o.tokenizer_path, err, sizeof err);
        if (!tok) die("%s", err);
        tokenizer_tool(&o, tok);
        tokenizer_free(tok);
        free(o.encode_files);
        return 0;
    }
    if (!o.model_path) { // --render-chat, or --encode-chat with -z, and --chat-template
        ChatTemplate *ct = open_chat_template(&o, NULL, "");
        Tokenizer *tok = NULL;
        if (o.encode_chat && !(tok = tokenizer_from_path(o.tokenizer_path, err, sizeof err))) die("%s", err);
        print_chat(ct, tok, &o);
        tokenizer_free(tok);
        chat_template_free(ct);
        free(o.encode_chats);
        return 0;
    }
    Model model;
    if (model_load(&model, o.model_path, err, sizeof err)) die("%s", err);
    if (o.check_tensors && model_check_tensors(o.model_path, err, sizeof err)) die("%s", err);
    const Config *c = &model.cfg;
    const int context = o.context ? o.context : c->max_seq_len;
    if (context > c->max_seq_len && !o.info)
        fprintf(stderr, "run: warning: context %d is longer than the model was built for (%d)\n", context,
                c->max_seq_len);
    if (o.info) {
        print_info(&model, context, o.kv_type);
        model_free(&model);
        return 0;
    }

    Tokenizer *tok = open_tokenizer(&model, &o);
    if (o.encode_file || o.decode_ids) {
        if (!tok) die("%s has no embedded tokenizer; pass -z PATH", o.model_path);
        tokenizer_tool(&o, tok);
        tokenizer_free(tok);
        model_free(&model);
        free(o.encode_files);
        return 0;
    }
    if (o.render_chat || o.encode_chat) {
        ChatTemplate *ct = open_chat_template(&o, tok, o.model_path);
        print_chat(ct, tok, &o);
        chat_template_free(ct);
        tokenizer_free(tok);
        model_free(&model);
        free(o.encode_chats);
        return 0;
    }

    RunState state;
    if (state_create(&state, &model, context, PREFILL_CHUNK, o.mla_mode, o.kv_type, err, sizeof err))
        die("%s", err);
    if (o.chat) {
        ChatTemplate *ct = open_chat_template(&o, tok, o.model_path);
        chat(&model, &state, tok, ct, &o);
        chat_template_free(ct);
    } else if (o.ppl_path) {
        perplexity(&model, &state, tok, o.ppl_path, o.ppl_progress);
    } else {
        int n_prompt;
        int *prompt = read_prompt(&model, tok, &o, context, &n_prompt);
        generate(&model, &state, tok, &o, prompt, n_prompt);
        free(prompt);
    }
    state_free(&state);
    tokenizer_free(tok);
    model_free(&model);
    free(prompt_text);
    free(token_text);
    return 0;
}
