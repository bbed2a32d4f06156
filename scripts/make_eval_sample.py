#!/usr/bin/env python3
"""Take the first N stories of a TinyStories validation file as a committed sample.

    python3 scripts/make_eval_sample.py ../shared/data/tinystories/valid.txt weights/eval_stories.txt [N=100]

Stories are separated by lines holding only <|endoftext|>; the sample keeps that format,
so `./run MODEL.bin --ppl weights/eval_stories.txt` reads it like the full file.
"""
import sys


def stories(path):
    story = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.rstrip("\r\n") == "<|endoftext|>":
                yield "\n".join(story).strip()
                story = []
            else:
                story.append(line.rstrip("\r\n"))
    if story:
        yield "\n".join(story).strip()


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    n = int(sys.argv[3]) if len(sys.argv) == 4 else 100
    picked = [s for s in stories(sys.argv[1]) if s][:n]
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write("\n<|endoftext|>\n".join(picked) + "\n<|endoftext|>\n")
    print("wrote %d stories to %s" % (len(picked), sys.argv[2]))


if __name__ == "__main__":
    main()
