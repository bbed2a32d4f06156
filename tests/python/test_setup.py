"""The fresh-machine pieces: packages.txt (the one package list), and how .ci/fresh-root
reads the README's two quick-start commands (the real README, and malformed ones that must
be refused with one error line, never half-parsed). The check itself (debootstrap + chroot)
needs root and the network: `make fresh-check`, run by .ci/run."""
import os
import re
import subprocess
import tempfile
import unittest

from tests.python import util

FRESH_ROOT = os.path.join(util.ROOT, ".ci", "fresh-root")
PACKAGES = os.path.join(util.ROOT, "packages.txt")


def package_names(path):
    """packages.txt as setup.sh reads it: `#` starts a comment, names split on blanks."""
    names = []
    with open(path) as f:
        for line in f:
            names += line.split("#", 1)[0].split()
    return names


class PackagesTest(unittest.TestCase):
    def test_list(self):
        names = package_names(PACKAGES)
        self.assertEqual(len(names), len(set(names)), "duplicates in packages.txt")
        for n in names:  # Debian package-name syntax (Policy 5.6.1)
            self.assertRegex(n, r"^[a-z0-9][a-z0-9+.-]+$")
        # what today's tests need (python3-sentencepiece: test_cli.test_ppl's reference)
        for need in ("build-essential", "libsentencepiece-dev", "libcmocka-dev", "python3-numpy",
                     "python3-sentencepiece"):
            self.assertIn(need, names)


class ReadmeCommandsTest(unittest.TestCase):
    def commands(self, path):
        return subprocess.run(["bash", FRESH_ROOT, "--print-commands", path],
                              capture_output=True, text=True, timeout=60)

    def test_real_readme(self):
        p = self.commands(os.path.join(util.ROOT, "README.md"))
        self.assertEqual(p.returncode, 0, p.stderr)
        first, second = p.stdout.splitlines()
        self.assertTrue(first.startswith("./setup.sh "), first)  # the one setup command
        self.assertNotIn("sudo", first)  # a fresh Debian root has none
        self.assertIn("./run ", first)
        self.assertEqual(second, "make test")

    def readme(self, text):
        fd, path = tempfile.mkstemp(suffix=".md")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.addCleanup(os.unlink, path)
        return path

    def test_parsing_rules(self):
        text = ("# t\n## Intro\n```sh\nnot this\n```\n## Quick start (fresh)\n```\nplain fence\n"
                "```\n```sh\none\n\n## still inside\ntwo\n```\nprose\n```sh\nthree\n```\n"
                "```sh\nfourth is ignored\n```\n")
        p = self.commands(self.readme(text))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "one\n## still inside\ntwo\nthree\n")

    def test_malformed(self):
        cases = {
            "no section": "# t\n## Start\n```sh\na\n```\n```sh\nb\n```\n",
            "one block": "## Quick start\n```sh\na\n```\n## Next\n```sh\nb\n```\n",
            "empty block": "## Quick start\n```sh\na\n```\n```sh\n  \n```\n",
            "unclosed": "## Quick start\n```sh\na\n```\n```sh\nb\n",
            "no blocks": "## Quick start\ntext\n",
        }
        for name, text in cases.items():
            with self.subTest(name):
                p = self.commands(self.readme(text))
                self.assertEqual(p.returncode, 1, p.stdout)
                self.assertEqual(p.stdout, "")
                lines = p.stderr.splitlines()
                self.assertEqual(len(lines), 1, p.stderr)
                self.assertRegex(lines[0], r"^fresh-root: error: ")
        p = self.commands(os.path.join(tempfile.gettempdir(), "no-such-readme.md"))
        self.assertEqual((p.returncode, p.stderr.count("\n")), (1, 1), p.stderr)


if __name__ == "__main__":
    unittest.main()
