"""The inside of a simulated guest: a tiny filesystem kept in the simulator state, and a small shell.

`pct exec` and the QEMU guest agent's `exec` run here. Nothing of it ever runs on the host: the simulator
is root on the lab machine, so an argv from a test must never reach a real process. Instead the guest
understands the commands in COMMANDS below (one table, each with what it supports), plus `sh -c` / `bash -c`
scripts made of them with `;`, `&&`, `||`, `|`, `<`, `>`, `>>`, `2>`, `2>&1`, `>&2`, `NAME=value` prefixes and
`$NAME` expansion. Anything else exits 127 with "command not found", as a shell would.

The filesystem is a dict {path: {"kind": "file" | "dir", "data": text, "mode": "0644"}}; file contents are
text (UTF-8). chpasswd stores real SHA-512 crypt hashes in the guest's /etc/shadow, so tests can verify a
password with crypt(3) the way a login would.
"""
import posixpath
import re
import secrets
import subprocess
import time
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import crypt as _crypt   # deprecated in 3.11, present until 3.13
    except ImportError:          # pragma: no cover - newer Pythons fall back to openssl
        _crypt = None

MAX_SLEEP = 30.0


class ShellSyntaxError(Exception):
    pass


class ExitScript(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


def base_filesystem(hostname, distro="debian"):
    """The files every simulated guest starts with (a minimal Debian-like tree)."""
    files = {
        "/etc/passwd": "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
                       "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "/etc/shadow": "root:*:19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\nnobody:*:19700:0:99999:7:::\n",
        "/etc/group": "root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n",
        "/etc/hostname": f"{hostname}\n",
        "/etc/os-release": f'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
                           f'VERSION_ID="12"\nID={distro}\n',
    }
    fs = {path: {"kind": "dir", "data": "", "mode": "0755"}
          for path in ("/", "/etc", "/root", "/tmp", "/home", "/bin", "/usr", "/usr/bin", "/var", "/var/log")}
    fs["/tmp"]["mode"] = "1777"
    fs["/root"]["mode"] = "0700"
    for path, text in files.items():
        fs[path] = {"kind": "file", "data": text, "mode": "0640" if path == "/etc/shadow" else "0644"}
    return fs


def sha512_crypt(password):
    if _crypt is not None:
        return _crypt.crypt(password, _crypt.mksalt(_crypt.METHOD_SHA512))
    # The password travels on stdin, never in argv.
    return subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password, text=True,
                          capture_output=True, check=True).stdout.strip()


# --- tokenizer and parser ---------------------------------------------------------------------------

def add_piece(word, text, do_expand):
    """Append to a word, merging with the previous piece of the same kind so `$NAME` stays whole."""
    if word and word[-1][1] == do_expand:
        word[-1] = (word[-1][0] + text, do_expand)
    else:
        word.append((text, do_expand))


OPERATORS = ("2>&1", "1>&2", ">&2", "2>>", "&&", "||", ">>", "2>", ";", "|", ">", "<", "&")


def tokenize(script):
    """Words and operators. Words are lists of (text, expand) pieces, so quoting decides expansion."""
    tokens, word, in_word, i = [], [], False, 0
    while i < len(script):
        char = script[i]
        if char in " \t\n" and char != "\n":
            if in_word:
                tokens.append(("word", word))
                word, in_word = [], False
            i += 1
            continue
        if char == "\n":
            if in_word:
                tokens.append(("word", word))
                word, in_word = [], False
            tokens.append(("op", ";"))
            i += 1
            continue
        if char == "#" and not in_word:
            while i < len(script) and script[i] != "\n":
                i += 1
            continue
        operator = next((op for op in OPERATORS if script.startswith(op, i)), None)
        if operator and not (operator[0] in "12" and in_word):
            if in_word:
                tokens.append(("word", word))
                word, in_word = [], False
            tokens.append(("op", operator))
            i += len(operator)
            continue
        if char == "'":
            end = script.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError("unterminated quoted string")
            add_piece(word, script[i + 1:end], False)
            in_word, i = True, end + 1
            continue
        if char == '"':
            i += 1
            text = ""
            while i < len(script) and script[i] != '"':
                if script[i] == "\\" and i + 1 < len(script) and script[i + 1] in '"\\$`':
                    text += script[i + 1]
                    i += 2
                else:
                    text += script[i]
                    i += 1
            if i >= len(script):
                raise ShellSyntaxError("unterminated quoted string")
            if "$(" in text or "`" in text:
                raise ShellSyntaxError("command substitution is not supported by the simulator")
            add_piece(word, text, True)
            in_word, i = True, i + 1
            continue
        if char == "\\" and i + 1 < len(script):
            add_piece(word, script[i + 1], False)
            in_word, i = True, i + 2
            continue
        if char == "`" or script.startswith("$(", i):
            raise ShellSyntaxError("command substitution is not supported by the simulator")
        add_piece(word, char, True)
        in_word, i = True, i + 1
    if in_word:
        tokens.append(("word", word))
    return tokens


VAR_RE = re.compile(r"\$(?:\{(\w+|\?)\}|(\w+|\?))")


def expand(word, env):
    return "".join(VAR_RE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text) if do_expand else text
                   for text, do_expand in word)


def parse(tokens):
    """[(connector, pipeline)] where a pipeline is a list of commands {argv words, assignments, redirects}."""
    sequence, pipeline, command, connector = [], [], None, ";"

    def new_command():
        return {"words": [], "redirects": []}

    command = new_command()
    position = 0
    while position < len(tokens):
        kind, value = tokens[position]
        if kind == "word":
            command["words"].append(value)
        elif value in (">", ">>", "<", "2>", "2>>"):
            position += 1
            if position >= len(tokens) or tokens[position][0] != "word":
                raise ShellSyntaxError(f"syntax error near unexpected token '{value}'")
            command["redirects"].append((value, tokens[position][1]))
        elif value in ("2>&1", "1>&2", ">&2"):
            command["redirects"].append((value, None))
        elif value == "|":
            if not command["words"]:
                raise ShellSyntaxError("syntax error near unexpected token '|'")
            pipeline.append(command)
            command = new_command()
        elif value in (";", "&&", "||"):
            if command["words"]:
                pipeline.append(command)
            if pipeline:
                sequence.append((connector, pipeline))
            elif value != ";":
                raise ShellSyntaxError(f"syntax error near unexpected token '{value}'")
            pipeline, command, connector = [], new_command(), value
        else:
            raise ShellSyntaxError(f"'{value}' is not supported by the simulator")
        position += 1
    if command["words"]:
        pipeline.append(command)
    if pipeline:
        sequence.append((connector, pipeline))
    return sequence


# --- execution ----------------------------------------------------------------------------------------

class NeedsStdin(Exception):
    """Raised when a command reads stdin that the caller has not sent yet (see run())."""


class Stdin:
    """A stream the first reader consumes, as a real stdin would be.

    `None` means "not read from the client yet": reading it raises NeedsStdin, so `pct exec` can send its
    stdin only to commands that read it. A command that never reads stdin must not wait for the client's
    EOF (as `pct exec 100 -- echo hi` does not on PVE).
    """

    def __init__(self, text=""):
        self.text = text

    def read(self):
        if self.text is None:
            raise NeedsStdin()
        text, self.text = self.text, ""
        return text


class Guest:
    """One command run inside a guest: its filesystem, environment and working directory."""

    def __init__(self, fs, hostname):
        self.fs = fs
        self.hostname = hostname
        self.env = {"HOME": "/root", "USER": "root", "LOGNAME": "root", "SHELL": "/bin/sh",
                    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "?": "0"}
        self.cwd = "/root"

    # filesystem helpers
    def path(self, name):
        return posixpath.normpath(posixpath.join(self.cwd, name)) if name else self.cwd

    def node(self, name):
        return self.fs.get(self.path(name))

    def read_file(self, name):
        entry = self.node(name)
        if entry is None:
            raise OSError(f"{name}: No such file or directory")
        if entry["kind"] == "dir":
            raise OSError(f"{name}: Is a directory")
        return entry["data"]

    def write_file(self, name, text, append=False):
        path = self.path(name)
        if path == "/dev/null":
            return
        parent = self.fs.get(posixpath.dirname(path))
        if parent is None or parent["kind"] != "dir":
            raise OSError(f"{name}: No such file or directory")
        entry = self.fs.get(path)
        if entry and entry["kind"] == "dir":
            raise OSError(f"{name}: Is a directory")
        if entry is None:
            entry = self.fs[path] = {"kind": "file", "data": "", "mode": "0644"}
        entry["data"] = (entry["data"] if append else "") + text

    # running
    def run_script(self, script, stdin):
        try:
            sequence = parse(tokenize(script))
        except ShellSyntaxError as error:
            return 2, "", f"sh: {error}\n"
        out, err, status = [], [], 0
        try:
            for connector, pipeline in sequence:
                if (connector == "&&" and status != 0) or (connector == "||" and status == 0):
                    continue
                status, stdout, stderr = self.run_pipeline(pipeline, stdin)
                self.env["?"] = str(status)
                out.append(stdout)
                err.append(stderr)
        except ExitScript as done:
            status = done.code
        return status, "".join(out), "".join(err)

    def run_pipeline(self, pipeline, stdin):
        data, err, status = None, [], 0
        for index, command in enumerate(pipeline):
            source = stdin if index == 0 else Stdin(data)
            status, data, stderr = self.run_command(command, source)
            err.append(stderr)
        return status, data, "".join(err)

    def run_command(self, command, stdin):
        words = [expand(word, self.env) for word in command["words"]]
        assignments = {}
        while words and re.match(r"^[A-Za-z_]\w*=", words[0]):
            name, value = words.pop(0).split("=", 1)
            assignments[name] = value
        if not words:
            self.env.update(assignments)
            return 0, "", ""
        # `NAME=value cmd` sets NAME for that command only.
        saved_env = dict(self.env) if assignments else None
        self.env.update(assignments)
        try:
            for operator, target in command["redirects"]:
                if operator == "<":
                    stdin = Stdin(self.read_file(expand(target, self.env)))
            status, stdout, stderr = self.run_argv(words, stdin)
            for operator, target in command["redirects"]:
                if operator == "2>&1":
                    stdout, stderr = stdout + stderr, ""
                elif operator in (">&2", "1>&2"):
                    stdout, stderr = "", stderr + stdout
                elif operator in (">", ">>"):
                    self.write_file(expand(target, self.env), stdout, append=operator == ">>")
                    stdout = ""
                elif operator in ("2>", "2>>"):
                    self.write_file(expand(target, self.env), stderr, append=operator == "2>>")
                    stderr = ""
        except OSError as error:
            return 1, "", f"sh: {error}\n"
        finally:
            if saved_env is not None:
                self.env = saved_env
        return status, stdout, stderr

    def run_argv(self, argv, stdin):
        name = argv[0]
        if "/" in name and posixpath.dirname(name) in ("/bin", "/usr/bin", "/sbin", "/usr/sbin"):
            name = posixpath.basename(name)
        entry = COMMANDS.get(name)
        if entry is None:
            return 127, "", f"sh: 1: {argv[0]}: not found\n"
        try:
            return entry[0](self, argv[1:], stdin)
        except OSError as error:
            return 1, "", f"{name}: {error}\n"


# --- the commands ----------------------------------------------------------------------------------------

def cmd_true(guest, args, stdin):
    return 0, "", ""


def cmd_false(guest, args, stdin):
    return 1, "", ""


def cmd_exit(guest, args, stdin):
    raise ExitScript(int(args[0]) if args else int(guest.env.get("?", "0")))


def cmd_echo(guest, args, stdin):
    newline = "\n"
    if args and args[0] == "-n":
        args, newline = args[1:], ""
    return 0, " ".join(args) + newline, ""


def cmd_printf(guest, args, stdin):
    if not args:
        return 2, "", "printf: usage: printf format [arguments]\n"
    fmt, values = args[0], list(args[1:])
    fmt = fmt.replace("\\n", "\n").replace("\\t", "\t")
    out = ""
    while True:
        def substitute(match):
            if match.group(0) == "%%":
                return "%"
            return values.pop(0) if values else ""
        out += re.sub(r"%%|%[sd]", substitute, fmt)
        if not values:
            return 0, out, ""


def cmd_cat(guest, args, stdin):
    out, err, status = "", "", 0
    for name in args or ["-"]:
        if name == "-":
            out += stdin.read()
            continue
        try:
            out += guest.read_file(name)
        except OSError as error:
            err, status = err + f"cat: {error}\n", 1
    return status, out, err


def cmd_tee(guest, args, stdin):
    append = "-a" in args
    data = stdin.read()
    for name in (a for a in args if a != "-a"):
        guest.write_file(name, data, append=append)
    return 0, data, ""


def cmd_test(guest, args, stdin, bracket=False):
    if bracket:
        if not args or args[-1] != "]":
            return 2, "", "[: missing ']'\n"
        args = args[:-1]
    negate = bool(args) and args[0] == "!"
    if negate:
        args = args[1:]
    if len(args) == 2 and args[0] in ("-e", "-f", "-d", "-s"):
        entry = guest.node(args[1])
        result = {"-e": entry is not None,
                  "-f": entry is not None and entry["kind"] == "file",
                  "-d": entry is not None and entry["kind"] == "dir",
                  "-s": entry is not None and entry["kind"] == "file" and entry["data"] != ""}[args[0]]
    elif len(args) == 2 and args[0] in ("-z", "-n"):
        result = (args[1] == "") == (args[0] == "-z")
    elif len(args) == 3 and args[1] in ("=", "!="):
        result = (args[0] == args[2]) == (args[1] == "=")
    elif len(args) == 1:
        result = args[0] != ""
    else:
        return 2, "", f"test: unsupported expression: {' '.join(args)}\n"
    return (0 if result != negate else 1), "", ""


def cmd_touch(guest, args, stdin):
    for name in args:
        if guest.node(name) is None:
            guest.write_file(name, "")
    return 0, "", ""


def cmd_mkdir(guest, args, stdin):
    parents = "-p" in args
    mode = "0755"
    names = []
    iterator = iter(args)
    for arg in iterator:
        if arg == "-m":
            mode = next(iterator, "0755").rjust(4, "0")
        elif arg != "-p":
            names.append(arg)
    for name in names:
        path = guest.path(name)
        missing = []
        while path not in guest.fs:
            missing.append(path)
            path = posixpath.dirname(path)
        if not missing:
            if not parents:
                return 1, "", f"mkdir: cannot create directory '{name}': File exists\n"
            continue
        if len(missing) > 1 and not parents:
            return 1, "", f"mkdir: cannot create directory '{name}': No such file or directory\n"
        if guest.fs[path]["kind"] != "dir":
            return 1, "", f"mkdir: cannot create directory '{name}': Not a directory\n"
        for new in reversed(missing):
            guest.fs[new] = {"kind": "dir", "data": "", "mode": mode}
    return 0, "", ""


def cmd_rm(guest, args, stdin):
    force = any(a.startswith("-") and "f" in a for a in args)
    recursive = any(a.startswith("-") and ("r" in a or "R" in a) for a in args)
    for name in (a for a in args if not a.startswith("-")):
        path = guest.path(name)
        entry = guest.fs.get(path)
        if entry is None:
            if not force:
                return 1, "", f"rm: cannot remove '{name}': No such file or directory\n"
            continue
        if entry["kind"] == "dir" and not recursive:
            return 1, "", f"rm: cannot remove '{name}': Is a directory\n"
        for other in [p for p in guest.fs if p == path or p.startswith(path.rstrip("/") + "/")]:
            del guest.fs[other]
    return 0, "", ""


def cmd_chmod(guest, args, stdin):
    if len(args) < 2 or not re.match(r"^[0-7]{3,4}$", args[0]):
        return 1, "", "chmod: the simulator supports octal modes only\n"
    for name in args[1:]:
        entry = guest.node(name)
        if entry is None:
            return 1, "", f"chmod: cannot access '{name}': No such file or directory\n"
        entry["mode"] = args[0].rjust(4, "0")
    return 0, "", ""


def cmd_chown(guest, args, stdin):
    names = [a for a in args[1:] if not a.startswith("-")]
    for name in names:
        if guest.node(name) is None:
            return 1, "", f"chown: cannot access '{name}': No such file or directory\n"
    return 0, "", ""


def cmd_ls(guest, args, stdin):
    names = [a for a in args if not a.startswith("-")] or ["."]
    out = []
    for name in names:
        path = guest.path(name)
        entry = guest.fs.get(path)
        if entry is None:
            return 2, "", f"ls: cannot access '{name}': No such file or directory\n"
        if entry["kind"] == "file":
            out.append(name)
            continue
        prefix = path.rstrip("/") + "/"
        out.extend(sorted(p[len(prefix):] for p in guest.fs if p.startswith(prefix) and "/" not in p[len(prefix):]
                          and p != path))
    return 0, "".join(line + "\n" for line in out), ""


def cmd_grep(guest, args, stdin):
    flags, rest = set(), []
    for arg in args:
        if arg.startswith("-") and len(arg) > 1 and not rest:
            flags.update(arg[1:])
        else:
            rest.append(arg)
    if not rest:
        return 2, "", "grep: missing pattern\n"
    pattern, files = rest[0], rest[1:]
    text = "".join(guest.read_file(f) for f in files) if files else stdin.read()

    def matches(line):
        if "F" in flags:
            hit = line == pattern if "x" in flags else pattern in line
        else:
            hit = bool(re.fullmatch(pattern, line) if "x" in flags else re.search(pattern, line))
        return hit != ("v" in flags)

    lines = [line for line in text.splitlines() if matches(line)]
    if "q" in flags:
        return (0 if lines else 1), "", ""
    if "c" in flags:
        return (0 if lines else 1), f"{len(lines)}\n", ""
    return (0 if lines else 1), "".join(line + "\n" for line in lines), ""


def cmd_hostname(guest, args, stdin):
    return 0, guest.read_file("/etc/hostname"), ""


def cmd_whoami(guest, args, stdin):
    return 0, guest.env.get("USER", "root") + "\n", ""


def cmd_id(guest, args, stdin):
    if "-u" in args:
        return 0, ("root\n" if "-n" in args or "-un" in args else "0\n"), ""
    if "-un" in args:
        return 0, "root\n", ""
    return 0, "uid=0(root) gid=0(root) groups=0(root)\n", ""


def cmd_uname(guest, args, stdin):
    fields = {"-s": "Linux", "-n": guest.read_file("/etc/hostname").strip(), "-r": "6.8.12-9-pve",
              "-m": "x86_64"}
    if "-a" in args:
        return 0, f"Linux {fields['-n']} {fields['-r']} #1 SMP PREEMPT_DYNAMIC x86_64 GNU/Linux\n", ""
    chosen = [fields[a] for a in args if a in fields] or ["Linux"]
    return 0, " ".join(chosen) + "\n", ""


def cmd_pwd(guest, args, stdin):
    return 0, guest.cwd + "\n", ""


def cmd_cd(guest, args, stdin):
    target = guest.path(args[0] if args else guest.env.get("HOME", "/root"))
    entry = guest.fs.get(target)
    if entry is None or entry["kind"] != "dir":
        return 2, "", f"sh: 1: cd: can't cd to {args[0] if args else target}\n"
    guest.cwd = target
    return 0, "", ""


def cmd_sleep(guest, args, stdin):
    try:
        seconds = float(args[0]) if args else 0.0
    except ValueError:
        return 1, "", f"sleep: invalid time interval '{args[0]}'\n"
    time.sleep(min(seconds, MAX_SLEEP))
    return 0, "", ""


def cmd_env(guest, args, stdin):
    directory = None
    if args[:1] == ["-C"] or (args and args[0].startswith("--chdir=")):
        directory, args = (args[1], args[2:]) if args[0] == "-C" and len(args) > 1 else (args[0][8:], args[1:])
        entry = guest.fs.get(guest.path(directory))
        if entry is None or entry["kind"] != "dir":
            return 125, "", f"env: cannot change directory to '{directory}': No such file or directory\n"
    assignments = {}
    while args and "=" in args[0] and not args[0].startswith("-"):
        name, value = args[0].split("=", 1)
        assignments[name] = value
        args = args[1:]
    if not args:
        env = {**guest.env, **assignments}
        return 0, "".join(f"{k}={v}\n" for k, v in sorted(env.items()) if k != "?"), ""
    saved, saved_cwd = dict(guest.env), guest.cwd
    guest.env.update(assignments)
    if directory is not None:
        guest.cwd = guest.path(directory)
    try:
        return guest.run_argv(args, stdin)
    finally:
        guest.env, guest.cwd = saved, saved_cwd


def cmd_runuser(guest, args, stdin):
    """runuser -u USER -- argv: the command runs with the user's identity (USER, LOGNAME, HOME)."""
    if len(args) < 3 or args[0] != "-u" or (args[2] != "--" and len(args) < 3):
        return 1, "", "runuser: usage: runuser -u USER -- COMMAND [ARGS]\n"
    user, rest = args[1], args[3:] if args[2] == "--" else args[2:]
    entry = next((line.split(":") for line in guest.read_file("/etc/passwd").splitlines()
                  if line.split(":")[0] == user), None)
    if entry is None:
        return 1, "", f"runuser: user {user} does not exist or the user entry does not contain all the required fields\n"
    if not rest:
        return 1, "", "runuser: no command given\n"
    saved = dict(guest.env)
    guest.env.update({"USER": user, "LOGNAME": user, "HOME": entry[5] if len(entry) > 5 else "/"})
    try:
        return guest.run_argv(rest, stdin)
    finally:
        guest.env = saved


def cmd_printenv(guest, args, stdin):
    if args:
        values = [guest.env[a] for a in args if a in guest.env]
        return (0 if len(values) == len(args) else 1), "".join(v + "\n" for v in values), ""
    return 0, "".join(f"{k}={v}\n" for k, v in sorted(guest.env.items()) if k != "?"), ""


def cmd_sh(guest, args, stdin):
    if args and args[0] == "-c":
        if len(args) < 2:
            return 2, "", "sh: -c: option requires an argument\n"
        script = args[1]
    elif not args or args[0] == "-s":
        script = stdin.read()
    else:
        return 127, "", f"sh: 0: cannot open {args[0]}: the simulator runs no script files\n"
    saved_env, saved_cwd = dict(guest.env), guest.cwd
    try:
        return guest.run_script(script, stdin)
    finally:
        guest.env, guest.cwd = saved_env, saved_cwd


def cmd_chpasswd(guest, args, stdin):
    if any(a in ("-e", "--encrypted") for a in args):
        encrypted = True
    else:
        encrypted = False
    passwd_users = {line.split(":")[0] for line in guest.read_file("/etc/passwd").splitlines() if line}
    shadow = guest.read_file("/etc/shadow").splitlines()
    for number, line in enumerate(stdin.read().splitlines(), start=1):
        if not line:
            continue
        user, sep, password = line.partition(":")
        if not sep or user not in passwd_users:
            return 1, "", f"chpasswd: line {number}: user '{user}' does not exist\nchpasswd: error detected, changes ignored\n"
        hashed = password if encrypted else sha512_crypt(password)
        days = int(time.time() // 86400)
        for index, entry in enumerate(shadow):
            if entry.split(":")[0] == user:
                fields = entry.split(":")
                fields[1], fields[2] = hashed, str(days)
                shadow[index] = ":".join(fields)
                break
        else:
            shadow.append(f"{user}:{hashed}:{days}:0:99999:7:::")
    guest.write_file("/etc/shadow", "\n".join(shadow) + "\n")
    return 0, "", ""


def cmd_getent(guest, args, stdin):
    databases = {"passwd": "/etc/passwd", "shadow": "/etc/shadow", "group": "/etc/group"}
    if not args or args[0] not in databases:
        return 1, "", "getent: the simulator knows passwd, shadow and group\n"
    lines = [line for line in guest.read_file(databases[args[0]]).splitlines() if line]
    if len(args) > 1:
        lines = [line for line in lines if line.split(":")[0] in args[1:]]
        if not lines:
            return 2, "", ""
    return 0, "".join(line + "\n" for line in lines), ""


# The supported set, in one place: name -> (function, what it supports).
COMMANDS = {
    "true": (cmd_true, "exit 0"),
    "false": (cmd_false, "exit 1"),
    "exit": (cmd_exit, "exit [n]: end the script"),
    "echo": (cmd_echo, "echo [-n] words"),
    "printf": (cmd_printf, "printf FORMAT [args]: %s, %d, %%, \\n, \\t"),
    "cat": (cmd_cat, "cat [file|-]...: stdin when no file"),
    "tee": (cmd_tee, "tee [-a] file..."),
    "test": (cmd_test, "test [!] -e|-f|-d|-s path, -z|-n str, a = b, a != b"),
    "[": (lambda g, a, s: cmd_test(g, a, s, bracket=True), "[ expression ]"),
    "touch": (cmd_touch, "touch file..."),
    "mkdir": (cmd_mkdir, "mkdir [-p] [-m mode] dir..."),
    "rm": (cmd_rm, "rm [-f] [-r] path..."),
    "chmod": (cmd_chmod, "chmod OCTAL path... (modes are recorded)"),
    "chown": (cmd_chown, "chown owner path... (accepted; ownership is not modelled)"),
    "ls": (cmd_ls, "ls [path]: names, one a line"),
    "grep": (cmd_grep, "grep [-qxFvc] pattern [file...]"),
    "hostname": (cmd_hostname, "print /etc/hostname"),
    "whoami": (cmd_whoami, "root"),
    "id": (cmd_id, "id [-u] [-n]"),
    "uname": (cmd_uname, "uname [-a|-s|-n|-r|-m]"),
    "pwd": (cmd_pwd, "print the working directory"),
    "cd": (cmd_cd, "cd [dir]"),
    "sleep": (cmd_sleep, f"sleep SECONDS (at most {MAX_SLEEP:g})"),
    "env": (cmd_env, "env [-C dir] [NAME=value...] [command args...]"),
    "runuser": (cmd_runuser, "runuser -u USER -- command args..."),
    "printenv": (cmd_printenv, "printenv [NAME...]"),
    "sh": (cmd_sh, "sh -c SCRIPT, or sh / sh -s reading the script from stdin"),
    "bash": (cmd_sh, "same as sh"),
    "chpasswd": (cmd_chpasswd, "chpasswd [-e]: user:password lines on stdin, SHA-512 crypt into /etc/shadow"),
    "getent": (cmd_getent, "getent passwd|shadow|group [name...]"),
}


def run(fs, hostname, argv, stdin_text=""):
    """Run one argv inside a guest whose filesystem is `fs` (changed in place). -> (rc, stdout, stderr)

    With `stdin_text=None`, a command that reads stdin raises NeedsStdin (and `fs` may be half changed:
    callers pass a copy then).
    """
    if not argv:
        return 1, "", "no command given\n"
    guest = Guest(fs, hostname)
    try:
        return guest.run_argv(list(argv), Stdin(stdin_text))
    except ExitScript as done:
        return done.code, "", ""


def new_exec_pid():
    return 1000 + secrets.randbelow(30000)
