#!/usr/bin/python3
"""Check that the documentation keeps up with the code.

What the code accepts is read from the source, never listed here: the
configuration keys and sections from src/config.c's key table, the error
messages from its error_at()/snprintf() calls, the options from
src/main.c's getopt_long() call. So a key, option or message added without
documentation fails one of these checks:

  lint PAGE...        groff renders each page without a warning
  man MAN8 MAN5       epolld.8 documents every option under OPTIONS;
                      epolld.ini.5 every key under its [section] heading
                      and every error message
  conf                conf/epolld.ini has exactly the parser's keys, each
                      under its section (a key without a default, such as
                      user, may be shown commented out: "; user = NAME")
  readme              README.md names every key in a code span

The pages are rendered with groff (Debian package groff-base) as plain
text, with a line length so large that nothing wraps or hyphenates, so a
search is one line at a time.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys

PLACEHOLDER = re.compile(r"%[-+ #0]*(?:\*|\d+)?(?:\.(?:\*|\d+))?(?:hh|h|ll|l|z|j|t)?[sdiuxXc]")


class Failure(Exception):
    pass


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def strip_c_comments(text):
    return re.sub(r"/\*.*?\*/", " ", text, flags=re.S)


def c_strings(text):
    """The value of adjacent C string literals ("a" "b" -> "ab")."""
    return "".join(bytes(s, "utf-8").decode("unicode_escape")
                   for s in re.findall(r'"((?:[^"\\]|\\.)*)"', text))


# --- What the code accepts ------------------------------------------------

def parser_keys(root):
    """[(section, key)] from src/config.c's key table, checked against the
    enum so that a table the regex cannot read fails instead of passing."""
    src = strip_c_comments(read(os.path.join(root, "src", "config.c")))
    enum = re.search(r"enum\s+key\s*\{(.*?)\}", src, re.S)
    table = re.search(r"key_spec\s+keys\s*\[[^]]*\]\s*=\s*\{(.*?)\n\};", src, re.S)
    if not enum or not table:
        raise Failure("src/config.c: cannot find enum key or the keys[] table")
    names = [n for n in re.findall(r"\b(KEY_\w+)", enum.group(1)) if n != "KEY_COUNT"]
    rows = re.findall(r'\[(KEY_\w+)\]\s*=\s*\{\s*"(\w+)"\s*,\s*"(\w+)"', table.group(1))
    if not rows or sorted(r[0] for r in rows) != sorted(names):
        raise Failure(f"src/config.c: the keys[] table ({[r[0] for r in rows]}) does not "
                      f"match enum key ({names}); update tests/docs/check_docs.py")
    sections = re.search(r"sections\[\]\s*=\s*\{([^}]*)\}", src)
    if not sections:
        raise Failure("src/config.c: cannot find the sections[] table")
    known = re.findall(r'"(\w+)"', sections.group(1))
    for _, section, key in rows:
        if section not in known:
            raise Failure(f"src/config.c: key {key} is in section [{section}], "
                          f"which is not in sections[] {known}")
    return [(section, key) for _, section, key in rows]


def parser_messages(root):
    """printf formats of every configuration error, without the FILE:LINE
    prefix that config_parse_stream() and config_load() put in front."""
    src = strip_c_comments(read(os.path.join(root, "src", "config.c")))
    literals = r'((?:\s*"(?:[^"\\]|\\.)*")+)'
    found = [c_strings(m) for m in re.findall(r"\berror_at\(\s*p\s*," + literals, src)]
    for m in re.findall(r"\bsnprintf\(\s*err\s*,\s*CONFIG_ERROR_MAX\s*," + literals, src):
        found.append(re.sub(r"^%s(?::%[du])?: ", "", c_strings(m)))
    if len(found) < 10:
        raise Failure(f"src/config.c: found only {len(found)} error messages; "
                      "update tests/docs/check_docs.py")
    return found


def options(root):
    """[(short, long, takes_argument)] from src/main.c's getopt_long call."""
    src = strip_c_comments(read(os.path.join(root, "src", "main.c")))
    optstring = re.search(r'getopt_long\(\s*argc\s*,\s*argv\s*,\s*"([^"]*)"', src)
    longopts = re.findall(r'\{\s*"([\w-]+)"\s*,\s*(no_argument|required_argument|'
                          r"optional_argument)\s*,\s*NULL\s*,\s*'(\w)'\s*\}", src)
    if not optstring or not longopts:
        raise Failure("src/main.c: cannot find the getopt_long() option string or "
                      "longopts[]; update tests/docs/check_docs.py")
    shorts = dict(re.findall(r"(\w)(:?)", optstring.group(1).lstrip("+-:")))
    longs = {short: (name, arg != "no_argument") for name, arg, short in longopts}
    result = []
    for short in sorted(set(shorts) | set(longs)):
        name, arg = longs.get(short, (None, False))
        result.append(("-" + short if short in shorts else None,
                       "--" + name if name else None, arg or shorts.get(short) == ":"))
    return result


# --- The pages --------------------------------------------------------------

def groff():
    path = shutil.which("groff")
    if not path:
        raise Failure("groff not found: install the Debian package groff-base")
    return path


def lint(page):
    proc = subprocess.run([groff(), "-man", "-ww", "-z", page], capture_output=True,
                          text=True, env=dict(os.environ, LC_ALL="C.UTF-8"))
    if proc.returncode != 0 or proc.stderr.strip():
        raise Failure(f"groff -man -ww -z {page} (exit {proc.returncode}):\n{proc.stderr}")


def render(page):
    proc = subprocess.run([groff(), "-man", "-Tascii", "-rLL=2000n", "-rHY=0",
                           "-P-c", "-P-b", "-P-o", "-P-u", page],
                          capture_output=True, text=True,
                          env=dict(os.environ, LC_ALL="C.UTF-8"))
    if proc.returncode != 0:
        raise Failure(f"groff cannot render {page}:\n{proc.stderr}")
    text = re.sub(r".\x08", "", proc.stdout)
    return [re.sub(r"[ \t]+", " ", line).rstrip() for line in text.splitlines()]


def sections_of(lines):
    """{heading: [lines]}: headings are the lines that start in column 0."""
    out, current = {}, None
    for line in lines:
        if line and not line[0].isspace():
            current = line.strip()
            out.setdefault(current, [])
        elif current is not None:
            out[current].append(line.strip())
    return out


def followed_by_argument(tokens, option):
    """True if OPTION is followed by a placeholder such as FILE."""
    i = tokens.index(option) + 1
    return i < len(tokens) and tokens[i].isupper()


def check_man8(page, opts):
    sections = sections_of(render(page))
    if "OPTIONS" not in sections:
        raise Failure(f"{page}: no OPTIONS section")
    tags = [re.split(r"[\s,]+", line) for line in sections["OPTIONS"] if line.startswith("-")]
    missing = []
    for short, long, takes_arg in opts:
        want = [o for o in (short, long) if o]
        entry = [t for t in tags if all(o in t for o in want)]
        if not entry:
            missing.append(" ".join(want))
        elif takes_arg and not any(followed_by_argument(t, o) for t in entry for o in want):
            missing.append(" ".join(want) + " (with its ARGUMENT)")
    if missing:
        raise Failure(f"{page}: OPTIONS has no entry for: {', '.join(missing)}")
    return len(opts)


def message_regex(fmt):
    parts = PLACEHOLDER.split(fmt)
    return re.compile(r"\S*?".join(re.escape(p) for p in parts).replace(r"\ ", " "))


def check_man5(page, keys, messages):
    lines = render(page)
    sections = sections_of(lines)
    problems = []
    for section, key in keys:
        heading = [h for h in sections if h.startswith(f"[{section}]")]
        if not heading:
            problems.append(f"no heading for section [{section}]")
            continue
        if not any(re.match(rf"{re.escape(key)} = ", line) for line in sections[heading[0]]):
            problems.append(f"no '{key} = ...' entry under {heading[0]}")
    for fmt in messages:
        rx = message_regex(fmt)
        if not any(rx.search(line) for line in lines):
            problems.append(f"error message not documented: {fmt!r}")
    if problems:
        raise Failure(f"{page}:\n  " + "\n  ".join(problems))
    return len(keys), len(messages)


# --- conf/epolld.ini and README.md ----------------------------------------

def check_conf(root, keys):
    path = os.path.join(root, "conf", "epolld.ini")
    found, section = [], None
    for n, line in enumerate(read(path).splitlines(), 1):
        m = re.match(r"\s*\[(\w+)\]", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"([;#]\s*)?(\w+)\s*=", line)
        if m:
            found.append((section, m.group(2), n))
    problems = [f"line {n}: '{key} =' in [{sec}] is not a key the parser accepts"
                for sec, key, n in found if (sec, key) not in keys]
    problems += [f"[{sec}] {key} is missing (add '{key} = DEFAULT', or '; {key} = EXAMPLE' "
                 f"for a key without a default)"
                 for sec, key in keys if not any((s, k) == (sec, key) for s, k, _ in found)]
    if problems:
        raise Failure(f"{path}:\n  " + "\n  ".join(problems))
    return len(keys)


def check_readme(root, keys):
    path = os.path.join(root, "README.md")
    spans = re.findall(r"`([^`\n]+)`", read(path))
    missing = [f"[{sec}] {key}" for sec, key in keys
               if not any(re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", s) for s in spans)]
    if missing:
        raise Failure(f"{path}: no code span names these keys: {', '.join(missing)}")
    return len(keys)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source-root", default=os.path.join(os.path.dirname(__file__), "..", ".."))
    ap.add_argument("check", choices=["lint", "man", "conf", "readme"])
    ap.add_argument("pages", nargs="*")
    args = ap.parse_args()
    root = args.source_root
    try:
        if args.check == "lint":
            if not args.pages:
                raise Failure("lint: no pages given")
            for page in args.pages:
                lint(page)
            print(f"{len(args.pages)} page(s) render without groff warnings")
        elif args.check == "man":
            if len(args.pages) != 2:
                raise Failure("man: give the built epolld.8 and epolld.ini.5")
            failures = []
            try:
                n_opts = check_man8(args.pages[0], options(root))
            except Failure as e:
                failures.append(str(e))
            try:
                n_keys, n_msgs = check_man5(args.pages[1], parser_keys(root),
                                            parser_messages(root))
            except Failure as e:
                failures.append(str(e))
            if failures:
                raise Failure("\n".join(failures))
            print(f"epolld.8 documents {n_opts} options; epolld.ini.5 documents "
                  f"{n_keys} keys and {n_msgs} error messages")
        elif args.check == "conf":
            print(f"conf/epolld.ini has the {check_conf(root, parser_keys(root))} parser keys")
        else:
            print(f"README.md names the {check_readme(root, parser_keys(root))} parser keys")
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
