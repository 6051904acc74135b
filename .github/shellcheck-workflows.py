"""Runs shellcheck on every `run:` block of the workflows (as bash, the runner's default shell,
with `${{ ... }}` expressions replaced by a placeholder word) and on the scripts under .github/.
Usage: python3 .github/shellcheck-workflows.py [shellcheck]"""

import pathlib
import re
import subprocess
import sys
import tempfile

import yaml

shellcheck = sys.argv[1] if len(sys.argv) > 1 else "shellcheck"
here = pathlib.Path(__file__).parent
failed = 0
for wf in sorted((here / "workflows").glob("*.yml")):
    doc = yaml.safe_load(wf.read_text())
    for job_name, job in (doc.get("jobs") or {}).items():
        for i, step in enumerate(job.get("steps") or []):
            script = step.get("run")
            if not script:
                continue
            script = re.sub(r"\$\{\{[^}]*\}\}", "EXPR", script)
            with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
                f.write("#!/usr/bin/env bash\nset -e\n" + script)
            r = subprocess.run([shellcheck, "--shell=bash", f.name], capture_output=True, text=True)
            if r.returncode != 0:
                failed += 1
                where = f"{wf.name}: job {job_name}, step {i + 1} ({step.get('name', 'unnamed')})"
                print(where + "\n" + r.stdout.replace(f.name, "run"))
for script in sorted(here.glob("*.sh")):
    r = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
    if r.returncode != 0:
        failed += 1
        print(r.stdout)
print(f"shellcheck: {failed} block(s) with findings" if failed else "shellcheck: no findings")
sys.exit(1 if failed else 0)
