"""Checks that every `$ jobgraph ...` block in the given Markdown files shows the
binary's real output. `--fix` rewrites stale blocks. Exits 1 on a mismatch.
Usage: python3 scripts/verify-doc-outputs.py [--fix] docs/*.md
The binary is $JOBGRAPH_BIN, else target/debug/jobgraph."""
import re, subprocess, os, sys, shlex
ROOT=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
J=os.environ.get("JOBGRAPH_BIN", ROOT+"/target/debug/jobgraph")
bad=0
def run(cmd):
    args=shlex.split(cmd)[1:]
    r=subprocess.run([J]+args,cwd=ROOT,capture_output=True,text=True,env=dict(os.environ,NO_COLOR="1"))
    return r.stdout+r.stderr
fix = "--fix" in sys.argv
for f in sys.argv[1:]:
    if f.startswith("--"): continue
    s=open(f).read()
    def repl(m):
        body=m.group(1)
        if not body.startswith("$ jobgraph"): return m.group(0)
        parts=re.split(r'(?m)^(\$ jobgraph.*)\n', body)
        # parts: ['', cmd1, out1, cmd2, out2...]
        new=""
        for i in range(1,len(parts),2):
            cmd=parts[i]; out=parts[i+1]
            actual=run(cmd[2:])
            if actual!=out:
                global bad
                bad+=1
                print(f"{f}: MISMATCH for {cmd}")
            new+=cmd+"\n"+actual
        return "```text\n"+new+"```"
    s2=re.sub(r'```text\n(.*?)```', repl, s, flags=re.S)
    if fix and s2!=s:
        open(f,'w').write(s2); print("fixed",f)
sys.exit(1 if bad and not fix else 0)
