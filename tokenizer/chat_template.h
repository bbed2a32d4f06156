/* Chat templates, compiled: the structure scripts/chat_template.py derives from a
 * model's Jinja chat_template and verifies against jinja2 (docs/CHAT.md), rendered
 * here without any Jinja.
 *
 * A rendering is what transformers' apply_chat_template(messages,
 * add_generation_prompt=True, tokenize=False) gives, or a refusal with the reason
 * (a conversation the verified structure does not cover is never rendered
 * differently). Text only: the caller tokenizes it (add_special_tokens=False).
 * The structure is JSON, parsed with cJSON. Every failure is NULL / -1 with a
 * one-line reason in err (errlen bytes, always NUL-terminated).
 */
#ifndef MIXATTN_CHAT_TEMPLATE_H
#define MIXATTN_CHAT_TEMPLATE_H

#include <stddef.h>
#include <time.h>

typedef struct ChatTemplate ChatTemplate;

typedef enum { CHAT_SYSTEM = 0, CHAT_USER = 1, CHAT_ASSISTANT = 2 } ChatRole;

typedef struct {
    ChatRole role;
    char *content; /* UTF-8, NUL-terminated (a message holding U+0000 is refused) */
} ChatMessage;

/* The compiled structure (JSON text json[0..len)). */
ChatTemplate *chat_template_parse(const char *json, size_t len, char *err, size_t errlen);
void chat_template_free(ChatTemplate *t); /* NULL is fine */

int chat_template_accepts_system(const ChatTemplate *t);
/* The special token that closes an assistant turn ("" if none). */
const char *chat_template_end_of_turn(const ChatTemplate *t);

/* The whole conversation plus the generation prompt; today is the date the
 * template's strftime_now sees. malloc'd, NUL-terminated, *len bytes. */
char *chat_template_render(const ChatTemplate *t, const ChatMessage *m, int n,
                           const struct tm *today, size_t *len, char *err, size_t errlen);

/* For a chat whose history is already in the KV cache and that ends with a
 * generated assistant turn whose stop token was not fed: the text that closes that
 * turn (the assistant suffix), the next user message and the generation prompt.
 * With n_history messages so far (for the rules that depend on position). */
char *chat_template_next_turn(const ChatTemplate *t, const char *user_content, int n_history,
                              const struct tm *today, size_t *len, char *err, size_t errlen);

/* A messages file: a JSON list of {"role": "system"|"user"|"assistant",
 * "content": string}. *m malloc'd (free with chat_messages_free). */
int chat_messages_parse(const char *json, size_t len, ChatMessage **m, int *n, char *err,
                        size_t errlen);
void chat_messages_free(ChatMessage *m, int n);

#endif /* MIXATTN_CHAT_TEMPLATE_H */
