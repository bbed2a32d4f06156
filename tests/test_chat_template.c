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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tokenizer/chat_template.h"

static const char *STRUCTURE =
    "{\"version\": 2, \"no_system\": \"<s>\", \"generation\": \"<A>\", \"end_of_turn\": \"</t>\","
    " \"system_first\": {\"prefix\": \"<s><S>\", \"suffix\": \"</t>\"},"
    " \"roles\": {\"user\": {\"prefix\": \"<U>\", \"suffix\": \"</t>\"},"
    "            \"assistant\": {\"prefix\": \"<A>\", \"suffix\": \"</t>\"},"
    "            \"system\": {\"prefix\": \"<S>\", \"suffix\": \"</t>\"}},"
    " \"rules\": {\"alternate\": false, \"last_user\": true},"
    " \"content\": {"
    "  \"system_first\": {\"strip\": true, \"refuse_empty\": false, \"refuse_padded\": false,"
    "                     \"refuse_substrings\": [], \"cut_after\": \"\", \"cut_lstrip\": \"\"},"
    "  \"system\": {\"strip\": false, \"refuse_empty\": true, \"refuse_padded\": false,"
    "               \"refuse_substrings\": [], \"cut_after\": \"\", \"cut_lstrip\": \"\"},"
    "  \"user\": {\"strip\": true, \"refuse_empty\": false, \"refuse_padded\": false,"
    "             \"refuse_substrings\": [], \"cut_after\": \"\", \"cut_lstrip\": \"\"},"
    "  \"assistant\": {\"strip\": false, \"refuse_empty\": false, \"refuse_padded\": true,"
    "                  \"refuse_substrings\": [\"</think>\"],"
    "                  \"cut_after\": \"\", \"cut_lstrip\": \"\"}}}";

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
    const char *no_sys = "{\"version\": 2, \"no_system\": \"<s>[\\ue000%d %b %Y\\ue001]\", "
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
        "", "[]", "{", "{\"version\": 2}", "{\"version\": 3}",
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
                                 "\"alternate\"", "\"refuse_substrings\"", "\"strip\"", "\"assistant\"",
                                 "\"cut_after\"", "\"cut_lstrip\""};
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

// a copy of base with the first occurrence of `from` replaced by `to`
static char *edited_from(const char *base, const char *from, const char *to) {
    const char *at = strstr(base, from);
    assert_non_null(at);
    char *j = malloc(strlen(base) + strlen(to) + 1);
    assert_non_null(j);
    memcpy(j, base, (size_t)(at - base));
    strcpy(j + (at - base), to);
    strcat(j, at + strlen(from));
    return j;
}

static char *edited(const char *from, const char *to) { return edited_from(STRUCTURE, from, to); }

// A content cut: text.split(sep)[-1] (non-overlapping occurrences from the left), then
// lstrip, only where sep occurs. Expected values worked out by hand from Python's rules.
static void test_cut(void **state) {
    (void)state;
    char *j0 = edited("\"refuse_padded\": true", "\"refuse_padded\": false"); // the assistant's
    char *j = edited_from(j0, "\"refuse_substrings\": [\"</think>\"]", "\"refuse_substrings\": []");
    free(j0);
    j0 = j;
    j = edited_from(j0, "\"cut_after\": \"\", \"cut_lstrip\": \"\"}}}",
                    "\"cut_after\": \"</think>\", \"cut_lstrip\": \"\\n\"}}}");
    free(j0);
    ChatTemplate *t = parse(j);
    char err[256];
    const char *cases[][2] = {
        {"no think", "no think"}, {"\nkept\n", "\nkept\n"}, {"</think>", ""},
        {"r</think>\n\nans", "ans"}, {"</think>start", "start"}, {"end</think>", ""},
        {"a</think>b</think>\n c", " c"}, {"</think></think>", ""}, {"x</think>\n", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ChatMessage m[] = {{CHAT_USER, "u</think>"}, {CHAT_ASSISTANT, (char *)cases[i][0]},
                           {CHAT_USER, "v"}};
        char *s = render(t, m, 3, err);
        assert_non_null(s);
        char want[128];
        snprintf(want, sizeof want, "<s><U>u</think></t><A>%s</t><U>v</t><A>", cases[i][1]);
        assert_string_equal(s, want);
        free(s);
    }
    chat_template_free(t);
    free(j);
    // an overlapping separator: "aaa".split("aa") == ["", "a"]; the user content is
    // stripped after the cut
    const char *user = strstr(STRUCTURE, "\"user\": {\"strip\"");
    assert_non_null(user);
    const char *from = strstr(user, "\"cut_after\": \"\", \"cut_lstrip\": \"\"");
    char *k = malloc(strlen(STRUCTURE) + 64);
    memcpy(k, STRUCTURE, (size_t)(from - STRUCTURE));
    strcpy(k + (from - STRUCTURE), "\"cut_after\": \"aa\", \"cut_lstrip\": \"b\"");
    strcat(k, from + strlen("\"cut_after\": \"\", \"cut_lstrip\": \"\""));
    t = parse(k);
    const char *ucases[][2] = {{"aaa", "a"}, {"xaaaay", "y"}, {"aaaaa", "a"}, {"aab b ", "b"},
                               {"x aa bbc ", "bbc"}, {" b ", "b"}};
    for (size_t i = 0; i < sizeof ucases / sizeof *ucases; i++) {
        ChatMessage m[] = {{CHAT_USER, (char *)ucases[i][0]}};
        char *s = render(t, m, 1, err);
        assert_non_null(s);
        char want[128];
        snprintf(want, sizeof want, "<s><U>%s</t><A>", ucases[i][1]);
        assert_string_equal(s, want);
        free(s);
    }
    chat_template_free(t);
    free(k);
    // a cut_lstrip that is not ASCII, a field this runtime does not know
    const char *bad[][2] = {{"\"cut_lstrip\": \"\"", "\"cut_lstrip\": \"\\u3000\""},
                            {"\"cut_lstrip\": \"\"", "\"cut_lstrip\": \"\", \"cut_rstrip\": \"\""},
                            {"\"cut_after\": \"\"", "\"cut_after\": 3"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *b = edited(bad[i][0], bad[i][1]);
        err[0] = 0;
        assert_null(chat_template_parse(b, strlen(b), err, sizeof err));
        assert_true(strlen(err) > 0);
        free(b);
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
        cmocka_unit_test(test_cut),
        cmocka_unit_test(test_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
