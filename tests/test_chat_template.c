/* Tests for tokenizer/chat_template.c: rendering a hand-written structure (prefixes,
 * suffixes, Python-whitespace strip over Unicode spaces, date fields for a fixed
 * date), every refusal rule, the next-turn text of chat mode, and one error (never a
 * crash) for each malformed structure and messages file. The expected strings are
 * written out here by hand from docs/CHAT.md. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tokenizer/chat_template.h"

static const char *STRUCTURE =
    "{\"version\": 1, \"no_system\": \"<s>\", \"generation\": \"<A>\", \"end_of_turn\": \"</t>\","
    " \"system_first\": {\"prefix\": \"<s><S>\", \"suffix\": \"</t>\"},"
    " \"roles\": {\"user\": {\"prefix\": \"<U>\", \"suffix\": \"</t>\"},"
    "            \"assistant\": {\"prefix\": \"<A>\", \"suffix\": \"</t>\"},"
    "            \"system\": {\"prefix\": \"<S>\", \"suffix\": \"</t>\"}},"
    " \"rules\": {\"alternate\": false, \"last_user\": true},"
    " \"content\": {"
    "  \"system_first\": {\"strip\": true, \"refuse_empty\": false, \"refuse_padded\": false,"
    "                     \"refuse_substrings\": []},"
    "  \"system\": {\"strip\": false, \"refuse_empty\": true, \"refuse_padded\": false,"
    "               \"refuse_substrings\": []},"
    "  \"user\": {\"strip\": true, \"refuse_empty\": false, \"refuse_padded\": false,"
    "             \"refuse_substrings\": []},"
    "  \"assistant\": {\"strip\": false, \"refuse_empty\": false, \"refuse_padded\": true,"
    "                  \"refuse_substrings\": [\"</think>\"]}}}";

static struct tm fixed_day(void) {
    struct tm tm = {0};
    tm.tm_year = 2025 - 1900, tm.tm_mon = 1, tm.tm_mday = 3, tm.tm_wday = 1, tm.tm_hour = 12;
    return tm;
}

static ChatTemplate *parse(const char *json) {
    char err[256];
    ChatTemplate *t = chat_template_parse(json, strlen(json), err, sizeof err);
    if (!t) fail_msg("parse: %s", err);
    return t;
}

static char *render(const ChatTemplate *t, ChatMessage *m, int n, char *err) {
    const struct tm day = fixed_day();
    size_t len;
    return chat_template_render(t, m, n, &day, &len, err, 256);
}

static void test_render(void **state) {
    (void)state;
    ChatTemplate *t = parse(STRUCTURE);
    char err[256];
    // U+3000 and U+00A0 are Python whitespace; U+200B is not
    ChatMessage m[] = {{CHAT_SYSTEM, " \xe3\x80\x80sys\xc2\xa0\n"}, {CHAT_USER, "\thi \xe2\x80\x8b "},
                       {CHAT_ASSISTANT, "yo"}, {CHAT_SYSTEM, " mid "}, {CHAT_USER, "bye"}};
    char *s = render(t, m, 5, err);
    assert_non_null(s);
    assert_string_equal(s, "<s><S>sys</t><U>hi \xe2\x80\x8b</t><A>yo</t><S> mid </t><U>bye</t><A>");
    free(s);
    s = render(t, m + 1, 1, err); // no system: no_system first
    assert_string_equal(s, "<s><U>hi \xe2\x80\x8b</t><A>");
    free(s);
    assert_string_equal(chat_template_end_of_turn(t), "</t>");
    assert_int_equal(chat_template_accepts_system(t), 1);
    const struct tm day = fixed_day();
    size_t len;
    s = chat_template_next_turn(t, "  again ", 3, &day, &len, err, sizeof err);
    assert_string_equal(s, "</t><U>again</t><A>");
    assert_int_equal(len, strlen(s));
    free(s);
    chat_template_free(t);
}

static void test_refusals(void **state) {
    (void)state;
    ChatTemplate *t = parse(STRUCTURE);
    char err[256];
    ChatMessage trailing[] = {{CHAT_USER, "a"}, {CHAT_ASSISTANT, "b"}};
    assert_null(render(t, trailing, 2, err));
    assert_non_null(strstr(err, "end with a user message"));
    ChatMessage empty_mid_system[] = {{CHAT_USER, "a"}, {CHAT_SYSTEM, ""}, {CHAT_USER, "b"}};
    assert_null(render(t, empty_mid_system, 3, err));
    assert_non_null(strstr(err, "empty system content"));
    ChatMessage padded[] = {{CHAT_USER, "a"}, {CHAT_ASSISTANT, " b"}, {CHAT_USER, "c"}};
    assert_null(render(t, padded, 3, err));
    assert_non_null(strstr(err, "whitespace"));
    ChatMessage think[] = {{CHAT_USER, "a"}, {CHAT_ASSISTANT, "x</think>y"}, {CHAT_USER, "c"}};
    assert_null(render(t, think, 3, err));
    assert_non_null(strstr(err, "</think>"));
    assert_null(render(t, think, 0, err));
    assert_non_null(strstr(err, "empty"));
    chat_template_free(t);

    // no system accepted, roles must alternate, a date field
    char *alt = strdup(STRUCTURE);
    char *p = strstr(alt, "\"system_first\": {\"prefix\"");
    assert_non_null(p);
    const char *no_sys = "{\"version\": 1, \"no_system\": \"<s>[\\ue000%d %b %Y\\ue001]\", "
                         "\"generation\": \"\", \"end_of_turn\": \"\", \"system_first\": null,"
                         " \"roles\": {\"user\": {\"prefix\": \"[I]\", \"suffix\": \"[/I]\"},"
                         " \"assistant\": {\"prefix\": \"\", \"suffix\": \"</s>\"}},"
                         " \"rules\": {\"alternate\": true, \"last_user\": false}, \"content\": {";
    const char *content = strstr(STRUCTURE, "\"content\": {") + strlen("\"content\": {");
    char *json = malloc(strlen(no_sys) + strlen(content) + 1);
    strcpy(json, no_sys);
    strcat(json, content);
    t = parse(json);
    assert_int_equal(chat_template_accepts_system(t), 0);
    ChatMessage sys[] = {{CHAT_SYSTEM, "s"}, {CHAT_USER, "u"}};
    assert_null(render(t, sys, 2, err));
    assert_non_null(strstr(err, "does not accept a system message"));
    ChatMessage twice[] = {{CHAT_USER, "u"}, {CHAT_USER, "v"}};
    assert_null(render(t, twice, 2, err));
    assert_non_null(strstr(err, "alternate"));
    ChatMessage ok[] = {{CHAT_USER, "u"}, {CHAT_ASSISTANT, "a"}};
    char *s = render(t, ok, 2, err);
    assert_string_equal(s, "<s>[03 Feb 2025][I]u[/I]a</s>");
    free(s);
    chat_template_free(t);
    free(json);
    free(alt);
}

static void test_bad_structures(void **state) {
    (void)state;
    const char *bad[] = {
        "", "[]", "{", "{\"version\": 2}", "{\"version\": 1}",
        "{\"version\": 1, \"no_system\": 3}",
        // a date field that never closes
        "{\"version\": 1, \"no_system\": \"\\ue000%d\", \"generation\": \"\", \"end_of_turn\": \"\"}",
        "{\"version\": 1, \"no_system\": \"\", \"generation\": \"\", \"end_of_turn\": \"\", "
        "\"system_first\": null, \"roles\": {\"user\": {\"prefix\": \"\"}}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char err[256] = "";
        assert_null(chat_template_parse(bad[i], strlen(bad[i]), err, sizeof err));
        assert_true(strlen(err) > 0);
        assert_null(strchr(err, '\n'));
    }
    // every field of the good structure is required: drop each key in turn
    static const char *keys[] = {"\"no_system\"", "\"generation\"", "\"end_of_turn\"", "\"rules\"",
                                 "\"alternate\"", "\"refuse_substrings\"", "\"strip\"", "\"assistant\""};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        char *j = strdup(STRUCTURE);
        char *at = strstr(j, keys[k]);
        assert_non_null(at);
        at[1] = 'X'; // rename the key
        char err[256] = "";
        assert_null(chat_template_parse(j, strlen(j), err, sizeof err));
        assert_true(strlen(err) > 0);
        free(j);
    }
}

static void test_messages(void **state) {
    (void)state;
    const char *good = "[{\"role\": \"system\", \"content\": \"s\"}, {\"content\": \"\\u00e9\", \"role\": \"user\"}]";
    ChatMessage *m;
    int n;
    char err[256];
    assert_int_equal(chat_messages_parse(good, strlen(good), &m, &n, err, sizeof err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(m[0].role, CHAT_SYSTEM);
    assert_int_equal(m[1].role, CHAT_USER);
    assert_string_equal(m[1].content, "\xc3\xa9");
    chat_messages_free(m, n);
    const char *bad[] = {"", "{}", "[]", "[1]", "[{\"role\": \"user\"}]", "[{\"role\": \"tool\", \"content\": \"x\"}]",
                         "[{\"role\": \"user\", \"content\": \"x\", \"name\": \"y\"}]",
                         "[{\"role\": 1, \"content\": \"x\"}]", "[{\"role\": \"user\", \"content\": null}]",
                         /* a key holding a newline (found by fuzz_chat): the error stays one line */
                         "[{\"role\": \"user\", \"conte\n\r nt\": \"x\"}]"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = 0;
        assert_int_equal(chat_messages_parse(bad[i], strlen(bad[i]), &m, &n, err, sizeof err), -1);
        assert_true(strlen(err) > 0);
        assert_null(strpbrk(err, "\n\r"));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_bad_structures),
        cmocka_unit_test(test_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
