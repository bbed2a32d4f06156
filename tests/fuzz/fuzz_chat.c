// libFuzzer target: the chat-template renderer and the messages-file parser
// (tokenizer/chat_template.h).
//
// The first byte picks what the rest is:
//   even: a compiled chat template (JSON); one that parses renders a fixed
//         conversation (with and without a system message) and a next turn;
//   odd:  a messages file (JSON list of {role, content}); one that parses is rendered
//         with the compiled template the seed corpus starts with (FUZZ_CHAT_TEMPLATE,
//         default tests/fuzz/corpus/chat/template_llama3.1).
// Every refusal must be one non-empty line; every rendering NUL-terminated at *len.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenizer/chat_template.h"

static ChatTemplate *fixed;

static void check_err(const char *err) {
    if (!err[0] || strchr(err, '\n')) abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *path = getenv("FUZZ_CHAT_TEMPLATE");
    if (!path) path = "tests/fuzz/corpus/chat/template_llama3.1";
    FILE *f = fopen(path, "rb");
    static char buf[1 << 16];
    const size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    char err[512] = "";
    if (n < 2 || !(fixed = chat_template_parse(buf + 1, n - 1, err, sizeof err))) {
        fprintf(stderr, "fuzz_chat: cannot load %s: %s (run from the repository root)\n", path, err);
        exit(1);
    }
    return 0;
}

static void render(const ChatTemplate *t, const ChatMessage *m, int n) {
    struct tm today = {0};
    today.tm_year = 124, today.tm_mon = 6, today.tm_mday = 26;
    char err[512] = "";
    size_t len = 0;
    char *text = chat_template_render(t, m, n, &today, &len, err, sizeof err);
    if (!text) check_err(err);
    else if (text[len] != 0) abort();
    free(text);
    err[0] = 0;
    text = chat_template_next_turn(t, "and then?", n, &today, &len, err, sizeof err);
    if (!text) check_err(err);
    else if (text[len] != 0) abort();
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int mode = data[0] & 1;
    const char *json = (const char *)data + 1;
    size--;
    char err[512] = "";
    if (mode == 0) {
        ChatTemplate *t = chat_template_parse(json, size, err, sizeof err);
        if (!t) { check_err(err); return 0; }
        (void)chat_template_accepts_system(t);
        if (!chat_template_end_of_turn(t)) abort();
        ChatMessage m[6] = {{CHAT_SYSTEM, "Be brief."}, {CHAT_USER, "Hi \xc3\xa9 \xf0\x9f\x98\x80"},
                            {CHAT_ASSISTANT, "Hello."}, {CHAT_USER, "  spaces  \n"},
                            {CHAT_ASSISTANT, "<think>\nr\n</think>\n\nok</think>"}, {CHAT_USER, "?"}};
        render(t, m, 4);
        render(t, m + 1, 3);
        render(t, m + 1, 0);
        render(t, m, 6); // a content cut (R1's past reasoning)
        chat_template_free(t);
        return 0;
    }
    ChatMessage *m = NULL;
    int n = 0;
    if (chat_messages_parse(json, size, &m, &n, err, sizeof err) != 0) { check_err(err); return 0; }
    render(fixed, m, n);
    chat_messages_free(m, n);
    return 0;
}
