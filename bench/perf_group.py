#!/usr/bin/env python3
# Groups `perf report --sort dso,sym` lines of the driver process by crate / area (used by profile.sh).
import sys,re,collections
# perf report --no-children -g none --sort dso,sym lines: pct dso [.] sym
g=collections.Counter(); tot=0
for line in sys.stdin:
    m=re.match(r'\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)',line)
    if not m: continue
    pct,dso,kind,sym=float(m[1]),m[2],m[3],m[4].strip()
    tot+=pct
    if kind=='k': key='kernel (syscalls, TCP loopback, scheduling)'
    elif dso.startswith('libc'):
        key='libc: malloc/free' if re.search(r'malloc|free|_int_|tcache|arena|realloc',sym) else 'libc: memcpy/memcmp/other'
    else:
        s=sym.lstrip('<').replace('_<','').strip()
        s=re.sub(r'^impl ','',s)
        mm=re.match(r'&?(?:mut )?(?:dyn )?([A-Za-z_][A-Za-z0-9_]*)',s)
        key=mm[1] if mm else s[:30]
        if key in ('core','alloc','std'): key='std/core/alloc'
    g[key]+=pct
for k,v in g.most_common(18): print(f"{v:6.2f}%  {k}")
print(f"{tot:6.2f}%  total")
