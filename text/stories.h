// Stories of a --ppl text file, one at a time, in bounded memory.
//
// A file holds stories separated by lines that start with "<|endoftext|>" (followed by
// '\n', '\r' or the end of the file); each story is stripped of surrounding whitespace
// and empty stories are skipped (docs/TRAINING.md defines the same split). The reader
// streams: memory is one story plus one read chunk, whatever the file's size, and a
// story longer than max_story_bytes is an error (a file without separators, or
// /dev/zero, cannot grow memory without bound). A NUL byte is an error too: the
// tokenizer takes C strings, and silently stopping at it would score half a file.
#ifndef MIXATTN_STORIES_H
#define MIXATTN_STORIES_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define STORY_SEPARATOR "<|endoftext|>"
#define STORY_MAX_BYTES_DEFAULT ((size_t)8 << 20) // 8 MiB: far above any real story

typedef struct {
    FILE *f;                // read, not owned
    size_t max_story_bytes; // cap on one story (before stripping)
    size_t chunk_bytes;     // bytes per read (64 KiB; tests make it tiny)
    char *buf;              // buf[start..len): the story being read (after the last separator)
    size_t start, len, cap;
    size_t scan;            // buf[start..scan) holds no separator start
    int at_file_start;      // buf[start] is the first byte of the file (begins a line)
    int eof;
    uint64_t offset;        // file offset of buf[start]
    uint64_t bytes_read;    // total bytes read from f
} StoryReader;

void story_reader_init(StoryReader *r, FILE *f, size_t max_story_bytes);
// 1: the next non-empty story is in *story (NUL-terminated, *len bytes, valid until
// the next call); 0: no more stories; -1: error (read failure, NUL byte, story too
// long, out of memory) with one line in err.
int story_reader_next(StoryReader *r, const char **story, size_t *len, char *err, size_t errlen);
void story_reader_free(StoryReader *r);

#endif
