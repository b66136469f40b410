"""The README starts with the two set-up commands, and .ci/run runs exactly those."""
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_commands():
    readme = (REPO / "README.md").read_text()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(block) == 2, "the README must start with exactly two set-up commands"
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    for command in block:
        assert command.strip() in ci, command
    assert "pytest" in block[1] and "allinone demo" in block[0]
