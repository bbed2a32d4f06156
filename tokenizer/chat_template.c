// Chat templates, compiled (see chat_template.h and docs/CHAT.md). The renderer is
// render_conversation() below, a line-by-line mirror of _render_structure() and
// _refusal() in scripts/chat_template.py, where the structure is verified.
#define _POSIX_C_SOURCE 200809L
#include "tokenizer/chat_template.h"

#include "common/error.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { KEY_SYSTEM_FIRST = 0, KEY_SYSTEM = 1, KEY_USER = 2, KEY_ASSISTANT = 3, N_KEYS = 4 };
static const char *key_names[N_KEYS] = {"system_first", "system", "user", "assistant"};
static const char *role_names[3] = {"system", "user", "assistant"};

typedef struct {
    int present;
    char *prefix, *suffix;
} Part;

typedef struct {
    int strip, refuse_empty, refuse_padded;
    char **substrings;
    int n_substrings;
    char *cut_after;  // "" or: keep what follows the last cut_after (Python's split()[-1]),
    char *cut_lstrip; // then remove leading bytes of cut_lstrip (ASCII), if it occurred
} ContentRule;

struct ChatTemplate {
    char *no_system, *generation, *end_of_turn;
    Part part[N_KEYS]; // system_first, system (not first), user, assistant
    int alternate, last_user;
    ContentRule content[N_KEYS];
};

// --- a growing byte buffer ---------------------------------------------------------

typedef struct {
    char *p;
    size_t n, cap;
    int failed;
} Buf;

static void buf_add(Buf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *grown = realloc(b->p, cap);
        if (!grown) { b->failed = 1; return; }
        b->p = grown, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

// U+E000 fmt U+E001 in a compiled string is strftime_now(fmt): today's date.
static const char DATE_OPEN[] = "\xee\x80\x80", DATE_CLOSE[] = "\xee\x80\x81";

static void buf_add_compiled(Buf *b, const char *s, const struct tm *today) {
    for (;;) {
        const char *open = strstr(s, DATE_OPEN);
        if (!open) { buf_add(b, s, strlen(s)); return; }
        buf_add(b, s, (size_t)(open - s));
        const char *fmt = open + 3, *close = strstr(fmt, DATE_CLOSE); // checked at parse
        char f[128], out[256];
        const size_t fl = (size_t)(close - fmt) < sizeof f - 1 ? (size_t)(close - fmt) : sizeof f - 1;
        memcpy(f, fmt, fl);
        f[fl] = 0;
        const size_t n = fl ? strftime(out, sizeof out, f, today) : 0;
        buf_add(b, out, n);
        s = close + 3;
    }
}

// --- Python's str.strip() -----------------------------------------------------------

static int py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

// the code point at s (n bytes left) and its length; invalid UTF-8 -> 0xFFFFFFFF, 1
static uint32_t utf8_at(const unsigned char *s, size_t n, size_t *len) {
    *len = 1;
    if (s[0] < 0x80) return s[0];
    const int k = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc0 ? 2 : 0;
    if (!k || (size_t)k > n) return 0xFFFFFFFFu;
    uint32_t c = s[0] & (0x7f >> k);
    for (int i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0xFFFFFFFFu;
        c = c << 6 | (s[i] & 0x3f);
    }
    *len = (size_t)k;
    return c;
}

// [*start, *end) of s without leading and trailing Python whitespace
static void py_strip(const char *s, size_t *start, size_t *end) {
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), a = 0, len;
    while (a < n && py_space(utf8_at(u + a, n - a, &len))) a += len;
    size_t z = n;
    while (z > a) {
        size_t b = z - 1;
        while (b > a && (u[b] & 0xc0) == 0x80 && z - b < 4) b--;
        if (!py_space(utf8_at(u + b, z - b, &len)) || b + len != z) break;
        z = b;
    }
    *start = a, *end = z;
}

// --- parsing the structure ------------------------------------------------------------

static char *dup_string(const cJSON *obj, const char *key, const char *where, char *err, size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsString(v)) {
        fail(err, errlen, "chat template: %s%s is missing or not a string", where, key);
        return NULL;
    }
    // every date field must close: U+E000 fmt U+E001, not nested
    for (const char *s = v->valuestring; (s = strstr(s, DATE_OPEN));) {
        const char *close = strstr(s + 3, DATE_CLOSE), *next = strstr(s + 3, DATE_OPEN);
        if (!close || (next && next < close) || close - s - 3 > 120) {
            fail(err, errlen, "chat template: %s%s holds a malformed date field", where, key);
            return NULL;
        }
        s = close + 3;
    }
    char *d = strdup(v->valuestring);
    if (!d) fail(err, errlen, "chat template: out of memory");
    return d;
}

static int get_bool(const cJSON *obj, const char *key, int *out, const char *where, char *err, size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsBool(v)) {
        fail(err, errlen, "chat template: %s%s is missing or not a boolean", where, key);
        return -1;
    }
    *out = cJSON_IsTrue(v);
    return 0;
}

static int parse_part(Part *p, const cJSON *v, const char *name, char *err, size_t errlen) {
    if (!v || cJSON_IsNull(v)) return 0; // absent: not accepted
    if (!cJSON_IsObject(v)) {
        fail(err, errlen, "chat template: %s is not an object", name);
        return -1;
    }
    char where[64];
    snprintf(where, sizeof where, "%s.", name);
    if (!(p->prefix = dup_string(v, "prefix", where, err, errlen))) return -1;
    if (!(p->suffix = dup_string(v, "suffix", where, err, errlen))) return -1;
    p->present = 1;
    return 0;
}

ChatTemplate *chat_template_parse(const char *json, size_t len, char *err, size_t errlen) {
    error_clear(err, errlen);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        fail(err, errlen, "chat template: the compiled structure is not a JSON object");
        return NULL;
    }
    ChatTemplate *t = calloc(1, sizeof *t);
    if (!t) { cJSON_Delete(root); fail(err, errlen, "chat template: out of memory"); return NULL; }
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "version");
    if (!cJSON_IsNumber(ver) || ver->valuedouble != 2) {
        fail(err, errlen, "chat template: unknown structure version (this runtime reads version 2)");
        goto fail;
    }
    if (!(t->no_system = dup_string(root, "no_system", "", err, errlen))) goto fail;
    if (!(t->generation = dup_string(root, "generation", "", err, errlen))) goto fail;
    if (!(t->end_of_turn = dup_string(root, "end_of_turn", "", err, errlen))) goto fail;
    if (parse_part(&t->part[KEY_SYSTEM_FIRST], cJSON_GetObjectItemCaseSensitive(root, "system_first"),
                   "system_first", err, errlen))
        goto fail;
    const cJSON *roles = cJSON_GetObjectItemCaseSensitive(root, "roles");
    if (!cJSON_IsObject(roles)) { fail(err, errlen, "chat template: roles is missing"); goto fail; }
    for (int k = KEY_SYSTEM; k < N_KEYS; k++) {
        char name[32];
        snprintf(name, sizeof name, "roles.%s", key_names[k]);
        if (parse_part(&t->part[k], cJSON_GetObjectItemCaseSensitive(roles, key_names[k]), name, err, errlen))
            goto fail;
    }
    if (!t->part[KEY_USER].present || !t->part[KEY_ASSISTANT].present) {
        fail(err, errlen, "chat template: roles.user and roles.assistant are required");
        goto fail;
    }
    const cJSON *rules = cJSON_GetObjectItemCaseSensitive(root, "rules");
    if (!cJSON_IsObject(rules)) { fail(err, errlen, "chat template: rules is missing"); goto fail; }
    if (get_bool(rules, "alternate", &t->alternate, "rules.", err, errlen) ||
        get_bool(rules, "last_user", &t->last_user, "rules.", err, errlen))
        goto fail;
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(root, "content");
    for (int k = 0; k < N_KEYS; k++) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(content, key_names[k]);
        char where[48];
        snprintf(where, sizeof where, "content.%s.", key_names[k]);
        ContentRule *r = &t->content[k];
        if (!cJSON_IsObject(c)) { fail(err, errlen, "chat template: content.%s is missing", key_names[k]); goto fail; }
        static const char *known[] = {"strip", "refuse_empty", "refuse_padded", "refuse_substrings",
                                      "cut_after", "cut_lstrip"};
        for (const cJSON *f = c->child; f; f = f->next) {
            int ok = 0;
            for (size_t j = 0; j < sizeof known / sizeof *known; j++) ok |= !strcmp(f->string, known[j]);
            if (!ok) {
                fail(err, errlen, "chat template: %s holds a field this runtime does not know", where);
                goto fail;
            }
        }
        if (!(r->cut_after = dup_string(c, "cut_after", where, err, errlen))) goto fail;
        if (!(r->cut_lstrip = dup_string(c, "cut_lstrip", where, err, errlen))) goto fail;
        for (const char *q = r->cut_lstrip; *q; q++)
            if ((unsigned char)*q >= 0x80) {
                fail(err, errlen, "chat template: %scut_lstrip is not ASCII", where);
                goto fail;
            }
        if (get_bool(c, "strip", &r->strip, where, err, errlen) ||
            get_bool(c, "refuse_empty", &r->refuse_empty, where, err, errlen) ||
            get_bool(c, "refuse_padded", &r->refuse_padded, where, err, errlen))
            goto fail;
        const cJSON *subs = cJSON_GetObjectItemCaseSensitive(c, "refuse_substrings");
        if (!cJSON_IsArray(subs)) { fail(err, errlen, "chat template: %srefuse_substrings is not a list", where); goto fail; }
        const int n = cJSON_GetArraySize(subs);
        if (n > 0 && !(r->substrings = calloc((size_t)n, sizeof(char *)))) { fail(err, errlen, "chat template: out of memory"); goto fail; }
        for (int i = 0; i < n; i++) {
            const cJSON *s = cJSON_GetArrayItem(subs, i);
            if (!cJSON_IsString(s) || !s->valuestring[0]) {
                fail(err, errlen, "chat template: %srefuse_substrings holds a non-string", where);
                goto fail;
            }
            if (!(r->substrings[i] = strdup(s->valuestring))) { fail(err, errlen, "chat template: out of memory"); goto fail; }
            r->n_substrings = i + 1;
        }
    }
    cJSON_Delete(root);
    return t;
fail:
    cJSON_Delete(root);
    chat_template_free(t);
    return NULL;
}

void chat_template_free(ChatTemplate *t) {
    if (!t) return;
    free(t->no_system);
    free(t->generation);
    free(t->end_of_turn);
    for (int k = 0; k < N_KEYS; k++) {
        free(t->part[k].prefix);
        free(t->part[k].suffix);
        for (int i = 0; i < t->content[k].n_substrings; i++) free(t->content[k].substrings[i]);
        free(t->content[k].substrings);
        free(t->content[k].cut_after);
        free(t->content[k].cut_lstrip);
    }
    free(t);
}

int chat_template_accepts_system(const ChatTemplate *t) { return t->part[KEY_SYSTEM_FIRST].present; }
const char *chat_template_end_of_turn(const ChatTemplate *t) { return t->end_of_turn; }

// --- rendering ------------------------------------------------------------------------

static int key_of(ChatRole role, int index) {
    return role == CHAT_SYSTEM ? (index == 0 ? KEY_SYSTEM_FIRST : KEY_SYSTEM)
                               : role == CHAT_USER ? KEY_USER : KEY_ASSISTANT;
}

// The content rules for message i (its role at position `index`); 0 or -1 with err.
static int check_content(const ChatTemplate *t, int key, const char *content, int index, char *err, size_t errlen) {
    const ContentRule *r = &t->content[key];
    const char *role = key == KEY_SYSTEM_FIRST ? "system" : key_names[key];
    size_t a, z;
    py_strip(content, &a, &z);
    if (r->refuse_empty && !content[0]) {
        fail(err, errlen, "message %d: this chat template treats empty %s content specially", index, role);
        return -1;
    }
    if (r->refuse_padded && (a != 0 || z != strlen(content))) {
        fail(err, errlen, "message %d: this chat template treats %s content with leading or trailing "
                "whitespace specially", index, role);
        return -1;
    }
    for (int i = 0; i < r->n_substrings; i++)
        if (strstr(content, r->substrings[i])) {
            fail(err, errlen, "message %d: this chat template treats %s content holding '%s' specially",
                    index, role, r->substrings[i]);
            return -1;
        }
    return 0;
}

// content.split(sep)[-1]: after the last of the non-overlapping occurrences found from
// the left (as Python's split), or content itself without one; then the lstrip
static const char *cut_content(const ContentRule *r, const char *content) {
    const size_t n = strlen(r->cut_after);
    if (!n || !strstr(content, r->cut_after)) return content;
    const char *rest = content;
    for (const char *at; (at = strstr(rest, r->cut_after));) rest = at + n;
    while (*rest && strchr(r->cut_lstrip, *rest)) rest++;
    return rest;
}

static void add_content(Buf *b, const ChatTemplate *t, int key, const char *content) {
    content = cut_content(&t->content[key], content);
    size_t a = 0, z = strlen(content);
    if (t->content[key].strip) py_strip(content, &a, &z);
    buf_add(b, content + a, z - a);
}

// the reason the structure does not render m[0..n), or 0 (mirrors _refusal)
static int refuse(const ChatTemplate *t, const ChatMessage *m, int n, char *err, size_t errlen) {
    if (n <= 0) { fail(err, errlen, "the conversation is empty"); return -1; }
    for (int i = 0; i < n; i++) {
        if (m[i].role == CHAT_SYSTEM) {
            if (!t->part[KEY_SYSTEM_FIRST].present) {
                fail(err, errlen, "this chat template does not accept a system message");
                return -1;
            }
            if (i > 0 && !t->part[KEY_SYSTEM].present) {
                fail(err, errlen, "this chat template accepts a system message only as the first message");
                return -1;
            }
        }
        if (check_content(t, key_of(m[i].role, i), m[i].content, i, err, errlen)) return -1;
    }
    const int first = m[0].role == CHAT_SYSTEM;
    if (t->alternate)
        for (int j = first; j < n; j++)
            if (m[j].role != ((j - first) % 2 == 0 ? CHAT_USER : CHAT_ASSISTANT)) {
                fail(err, errlen, "this chat template needs the roles to alternate user/assistant/user/...");
                return -1;
            }
    if (t->last_user && m[n - 1].role != CHAT_USER) {
        fail(err, errlen, "this chat template needs the conversation to end with a user message");
        return -1;
    }
    return 0;
}

static char *finish(Buf *b, size_t *len, char *err, size_t errlen) {
    if (b->failed || !b->p) {
        free(b->p);
        fail(err, errlen, "chat template: out of memory");
        return NULL;
    }
    if (len) *len = b->n;
    return b->p;
}

char *chat_template_render(const ChatTemplate *t, const ChatMessage *m, int n, const struct tm *today,
                           size_t *len, char *err, size_t errlen) {
    error_clear(err, errlen);
    if (refuse(t, m, n, err, errlen)) return NULL;
    Buf b = {0};
    buf_add(&b, "", 0);
    int i = 0;
    if (m[0].role == CHAT_SYSTEM) {
        const Part *p = &t->part[KEY_SYSTEM_FIRST];
        buf_add_compiled(&b, p->prefix, today);
        add_content(&b, t, KEY_SYSTEM_FIRST, m[0].content);
        buf_add_compiled(&b, p->suffix, today);
        i = 1;
    } else {
        buf_add_compiled(&b, t->no_system, today);
    }
    for (; i < n; i++) {
        const int key = key_of(m[i].role, i);
        buf_add_compiled(&b, t->part[key].prefix, today);
        add_content(&b, t, key, m[i].content);
        buf_add_compiled(&b, t->part[key].suffix, today);
    }
    buf_add_compiled(&b, t->generation, today);
    return finish(&b, len, err, errlen);
}

char *chat_template_next_turn(const ChatTemplate *t, const char *user_content, int n_history,
                              const struct tm *today, size_t *len, char *err, size_t errlen) {
    error_clear(err, errlen);
    if (check_content(t, KEY_USER, user_content, n_history, err, errlen)) return NULL;
    Buf b = {0};
    buf_add(&b, "", 0);
    buf_add_compiled(&b, t->part[KEY_ASSISTANT].suffix, today);
    buf_add_compiled(&b, t->part[KEY_USER].prefix, today);
    add_content(&b, t, KEY_USER, user_content);
    buf_add_compiled(&b, t->part[KEY_USER].suffix, today);
    buf_add_compiled(&b, t->generation, today);
    return finish(&b, len, err, errlen);
}

// --- messages files -----------------------------------------------------------------

int chat_messages_parse(const char *json, size_t len, ChatMessage **out, int *n_out, char *err, size_t errlen) {
    error_clear(err, errlen);
    *out = NULL, *n_out = 0;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        fail(err, errlen, "messages: not valid JSON");
        return -1;
    }
    if (!cJSON_IsArray(root) || cJSON_GetArraySize(root) == 0) {
        cJSON_Delete(root);
        fail(err, errlen, "messages: expected a non-empty JSON list of {\"role\", \"content\"} objects");
        return -1;
    }
    const int n = cJSON_GetArraySize(root);
    ChatMessage *m = calloc((size_t)n, sizeof *m);
    if (!m) { cJSON_Delete(root); fail(err, errlen, "messages: out of memory"); return -1; }
    int i = 0;
    for (const cJSON *e = root->child; e; e = e->next, i++) {
        if (!cJSON_IsObject(e)) {
            fail(err, errlen, "messages: item %d is not a {\"role\", \"content\"} object", i);
            goto fail;
        }
        for (const cJSON *k = e->child; k; k = k->next)
            if (strcmp(k->string, "role") && strcmp(k->string, "content")) {
                fail(err, errlen, "messages: item %d has the key '%s' (only role and content are supported)",
                        i, k->string);
                goto fail;
            }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(e, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!cJSON_IsString(role) || !cJSON_IsString(content)) {
            fail(err, errlen, "messages: item %d needs a string \"role\" and a string \"content\"", i);
            goto fail;
        }
        int r = -1;
        for (int k = 0; k < 3; k++) if (!strcmp(role->valuestring, role_names[k])) r = k;
        if (r < 0) {
            fail(err, errlen, "messages: item %d has the role '%s' (system, user or assistant)", i,
                    role->valuestring);
            goto fail;
        }
        m[i].role = (ChatRole)r;
        if (!(m[i].content = strdup(content->valuestring))) { fail(err, errlen, "messages: out of memory"); goto fail; }
    }
    cJSON_Delete(root);
    *out = m, *n_out = n;
    return 0;
fail:
    cJSON_Delete(root);
    chat_messages_free(m, n);
    return -1;
}

void chat_messages_free(ChatMessage *m, int n) {
    if (!m) return;
    for (int i = 0; i < n; i++) free(m[i].content);
    free(m);
}
