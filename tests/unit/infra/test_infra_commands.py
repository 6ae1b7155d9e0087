"""Every command that infra/ and docker/ run or tell a user to run exists in the project, with arguments its
command-line interface accepts: RayJob entrypoints, the launcher's and the compose services' commands,
and the commands in the READMEs and in the files' header comments.

`ray` and `mlflow` commands are parsed by their real click interfaces; `python trainer/run.py` and
`python sweeps/run.py` go through the config and sweep loaders, so every override must be a valid key;
every file a command names must exist.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex

import click
import pytest
import yaml

from tests.helpers.paths import DOCKER, INFRA, PROJECT_ROOT, tomllib

OPERATORS = {"&&", "||", ";", "|", "&"}
# Programs from outside the project that the docs use; their arguments are not checked.
EXTERNAL = {"helm", "aws", "export", "set", "cp", "sed", "base64", "mc", "ulimit", "chmod", "openssl", "."}


# ---------------------------------------------------------------------------------------------
# Where the commands are.


def _shell_lines(text: str) -> list[str]:
    """Lines joined across trailing backslashes."""
    return re.sub(r"\\\n\s*", " ", text).splitlines()


def readme_commands(path) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), re.S)
    return [line for block in blocks for line in _shell_lines(block) if line.strip()]


def comment_commands(path) -> list[str]:
    """`#   command` lines (three spaces: the files' convention for example commands)."""
    lines = [line[1:] for line in path.read_text().splitlines() if line.startswith("#   ")]
    return [line.strip() for line in _shell_lines("\n".join(lines))]


def manifest_commands() -> list[str]:
    commands = []
    for path in sorted((INFRA / "kuberay").glob("*.yaml")):
        commands += [doc["spec"]["entrypoint"] for doc in yaml.safe_load_all(path.read_text())
                     if doc["kind"] == "RayJob"]
    launcher = yaml.safe_load((INFRA / "aws" / "cluster.yaml").read_text())
    for key in ("initialization_commands", "setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        commands += launcher[key]
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    for service in compose["services"].values():
        if "build" in service:  # our images (the others run their own programs)
            line = shlex.join(service["command"])
            commands.append(re.sub(r"\$\{(\w+):[-?]([^}]*)\}", lambda m: m[2] if ":-" in m[0] else m[1], line))
    return commands


def all_commands() -> list[tuple[str, str]]:
    found = [("manifests", c) for c in manifest_commands()]
    for path in (DOCKER / "README.md", INFRA / "README.md"):
        found += [(path.relative_to(PROJECT_ROOT).as_posix(), c) for c in readme_commands(path)]
    for path in [*INFRA.rglob("*.yaml"), *INFRA.rglob("*.example"), DOCKER / "compose.yaml",
                 *DOCKER.glob("*Dockerfile"), DOCKER / ".env.example"]:
        found += [(path.relative_to(PROJECT_ROOT).as_posix(), c) for c in comment_commands(path)]
    for path in INFRA.glob("*.py"):  # the usage lines of the scripts' docstrings
        usage = ast.get_docstring(ast.parse(path.read_text()))
        found += [(path.name, c) for c in re.findall(r"^    (python .*)$", usage, re.M)]
    return found


def simple_commands(line: str) -> list[list[str]]:
    """A shell line -> its simple commands (split at && || ; | &), without leading VAR=value assignments."""
    line = re.sub(r"\$\([^()]*\)", "SUBSTITUTED", line)  # what $(...) runs is not checked
    lexer = shlex.shlex(line, posix=True, punctuation_chars="&|;")
    lexer.whitespace_split, lexer.commenters = True, "#"
    commands, current = [], []
    for token in lexer:
        if token in OPERATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    commands = [c[next(i for i, t in enumerate(c + ["."]) if not re.match(r"^\w+=", t)):] for c in commands]
    return [c for c in commands if c]


# ---------------------------------------------------------------------------------------------
# How each program's command is checked.


def click_parse(group: click.Group, argv: list[str]) -> list[str]:
    """Parse argv with a click CLI down to its leaf command (unknown options and bad values raise);
    returns the command path."""
    cmd, args, path = group, list(argv), []
    while isinstance(cmd, click.Group):
        ctx = cmd.make_context(cmd.name, args)
        rest = getattr(ctx, "_protected_args", None)
        rest = [*(ctx.protected_args if rest is None else rest), *ctx.args]
        name, cmd, args = cmd.resolve_command(ctx, rest)
        path.append(name)
    cmd.make_context(path[-1], args)
    return path


def check_python(argv: list[str]) -> None:
    from trainer.config import load_config

    if argv[0] == "-c":
        compile(argv[1], "<python -c>", "exec")
        for module in re.findall(r"import ([\w.]+(?:, [\w.]+)*)", argv[1]):
            for name in module.split(", "):
                assert importlib.util.find_spec(name) is not None, f"no module {name}"
        return
    if argv[0] == "-m":
        module, args = argv[1], argv[2:]
        assert importlib.util.find_spec(module) is not None, f"no module {module}"
        if module == "data_pipeline":
            from data_pipeline.__main__ import _parser

            _parser().parse_args(args)
        elif module == "trainer.evaluate":
            load_config(None, [a for a in args if "=" in a and not a.startswith(("-", "s3://"))])
        return
    script, args = argv[0], argv[1:]
    assert (PROJECT_ROOT / script).is_file(), f"no script {script}"
    if script == "trainer/run.py":
        from trainer.run import parse_args

        parsed = parse_args(args)
        config = PROJECT_ROOT / parsed.config if parsed.config else None
        load_config(config, parsed.overrides)  # the file exists, every override is a valid key and value
    elif script == "sweeps/run.py":
        from sweeps.spec import load_sweep

        sweep, *overrides = [a for a in args if a != "--no-report"]
        load_sweep(PROJECT_ROOT / sweep, overrides)  # and every trial's config, validated
    else:
        assert script in ("infra/dry_run.py", "infra/sizing.py"), f"unexpected script {script}"


def check_ray(argv: list[str]) -> None:
    from ray.scripts.scripts import cli

    inner = argv[argv.index("--") + 1:] if "--" in argv else []
    path = click_parse(cli, argv[1:len(argv) - len(inner)] + (["true"] if inner else []))
    if path[:2] == ["job", "submit"]:
        check(inner)
    if path[0] in ("up", "down", "dashboard", "exec", "attach"):
        config = next(a for a in argv[1:] if a.endswith(".yaml"))
        assert (PROJECT_ROOT / config).is_file(), f"no cluster config {config}"


def check_docker(argv: list[str]) -> None:
    if argv[:2] == ["docker", "build"]:
        dockerfile = argv[argv.index("-f") + 1]
        assert (PROJECT_ROOT / dockerfile).is_file() and (PROJECT_ROOT / argv[-1]).is_dir()
    elif argv[:2] == ["docker", "compose"]:
        compose_file = PROJECT_ROOT / argv[argv.index("-f") + 1]
        services = yaml.safe_load(compose_file.read_text())["services"]
        if "up" in argv:
            named = [a for a in argv[argv.index("up") + 1:] if not a.startswith("-")]
            assert set(named) <= set(services), f"no service {set(named) - set(services)}"
        if "exec" in argv:
            service = argv[argv.index("exec") + 1]
            assert service in services, f"no service {service}"
            check(argv[argv.index("exec") + 2:])
    elif argv[:2] == ["docker", "run"]:
        image = next(i for i, a in enumerate(argv) if re.match(r"^[\w./-]*seq-jepa[\w-]*:[\w.-]+$", a))
        if argv[image + 1:]:
            check(argv[image + 1:])
    else:
        assert argv[1] in ("push", "login"), f"unexpected docker command {argv}"


def check(argv: list[str]) -> None:
    program = argv[0]
    if program in ("python", "python3"):
        check_python(argv[1:])
    elif program == "ray":
        check_ray(argv)
    elif program == "mlflow":
        from mlflow.cli import cli

        click_parse(cli, argv[1:])
    elif program == "docker":
        check_docker(argv)
    elif program == "kubectl":
        if argv[1] in ("apply", "create", "delete") and "-f" in argv:
            assert (PROJECT_ROOT / argv[argv.index("-f") + 1]).is_file()
    else:
        assert program in EXTERNAL, f"unknown program {program!r}: add a check for it"
        if program == "cp":
            assert (PROJECT_ROOT / argv[1]).exists(), f"no file {argv[1]}"


COMMANDS = all_commands()


def test_the_commands_are_found():
    lines = [line for _, line in COMMANDS]
    assert sum("trainer/run.py" in line for line in lines) >= 6
    assert sum("sweeps/run.py" in line for line in lines) >= 2
    assert sum("ray start" in line for line in lines) >= 4


@pytest.mark.parametrize("where,line", COMMANDS, ids=[f"{w}:{i}" for i, (w, _) in enumerate(COMMANDS)])
def test_command_exists_with_valid_arguments(where, line):
    for argv in simple_commands(line):
        try:
            check(argv)
        except (click.ClickException, SystemExit) as err:
            pytest.fail(f"{where}: `{shlex.join(argv)}` is refused: {getattr(err, 'message', err)}")


def test_the_project_entry_points_resolve():
    """The console scripts pyproject.toml installs in the image (`seq-jepa-train`, `seq-jepa-data`)."""
    import importlib

    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function))


def test_a_wrong_command_is_caught():
    from trainer.errors import ConfigError

    for line in ("python trainer/run.py model.seq_lenn=3", "python trainer/run.py --config trainer/configs/nope.yaml",
                 "ray start --hed", "python sweeps/run.py sweeps/smoke.yaml train.epochz=1",
                 "ray job submit --address http://127.0.0.1:8265 -- python trainer/run.py data.nope=1",
                 "mlflow server --prot 5000", "kubectl apply -f infra/kuberay/missing.yaml"):
        with pytest.raises((AssertionError, click.ClickException, ConfigError)):
            for argv in simple_commands(line):
                check(argv)
