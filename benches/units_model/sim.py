#!/usr/bin/env python3
# Issue 26 design model: bytes up and requests per commit under block layouts, replayed
# from a trace.py trace. Usage: sim.py DB.trace.json
# Bytes up per one-row commit under block layouts, from a page-write trace.
import json, sys, math
PAGE = 4096
def fixed(trace, chunk, id_entry, keep_first):
    out = []
    for c in trace["commits"]:
        n = math.ceil(c["len"] / chunk)
        chunks = {p * PAGE // chunk for p in c["pages"]}
        if keep_first: chunks.discard(0)
        data = sum(min(chunk, c["len"] - i * chunk) for i in chunks)
        out.append((data + n * id_entry, len(chunks) + 1))
    return out
def variable(trace, cold, id_entry, url, keep_first, target, tail=False):
    # blocks: list of [start, end, last_changed]
    size = trace["size"]
    if not tail:
        blocks = [[s, min(s + cold, size), -1] for s in range(0, size, cold)]
    else:
        # cold blocks, then the last `cold` bytes in halving blocks down to 64 KiB
        body = max(0, size - cold)
        blocks = [[s, min(s + cold, body), -1] for s in range(0, body, cold)]
        at, b = body, cold // 2
        while at < size:
            b = max(b, 65536)
            blocks.append([at, min(at + b, size), -1]); at += b; b //= 2
        blocks = [x for x in blocks if x[1] > x[0]]
    out = []
    for k, c in enumerate(trace["commits"]):
        ln = c["len"]
        if ln > blocks[-1][1]:
            blocks.append([blocks[-1][1], ln, k])
        pages = sorted(set(c["pages"]) - ({0} if keep_first else set()))
        up = 0; staged = 0
        for p in pages:
            a, b = p * PAGE, p * PAGE + PAGE
            i = next(j for j, bl in enumerate(blocks) if bl[0] <= a < bl[1])
            s, e, _ = blocks[i]
            if e - s <= PAGE:
                blocks[i][2] = k; up += e - s; staged += 1; continue
            new = []
            if s < a: new.append([s, a, k]); up += 0 if url else a - s; staged += 1
            new.append([a, b, k]); up += PAGE; staged += 1
            if b < e: new.append([b, e, k]); up += 0 if url else e - b; staged += 1
            blocks[i:i+1] = new
        # merge: while too many blocks, merge the coldest adjacent pair of small blocks
        while len(blocks) > target:
            best = None
            for j in range(len(blocks) - 1):
                if blocks[j][2] >= k - 2 or blocks[j+1][2] >= k - 2: continue
                l = blocks[j+1][1] - blocks[j][0]
                if l > cold: continue
                if best is None or l < best[0]: best = (l, j)
            if best is None: break
            l, j = best
            up += 0 if url else l; staged += 1
            blocks[j:j+2] = [[blocks[j][0], blocks[j+1][1], max(blocks[j][2], blocks[j+1][2])]]
        out.append((up + len(blocks) * id_entry, staged + 1))
    return out

t = json.load(open(sys.argv[1]))
size = t["size"]
def show(name, r):
    first = r[0][0]; steady = sorted(x[0] for x in r[5:]); med = steady[len(steady)//2]
    req = sum(x[1] for x in r) / len(r)
    print(f"{name:58s} first {first/1024:8.1f} KiB  median {med/1024:6.1f} KiB  mean {sum(x[0] for x in r)/len(r)/1024:7.1f} KiB  requests {req:.2f}")
ch = max(65536, 1 << math.ceil(math.log2(math.sqrt(size * 40))))
show(f"today: fixed {ch//1024} KiB, 32-byte ids (61 B/entry), first kept", fixed(t, ch, 61, True))
for div in [256, 64]:
  cold = max(65536, 1 << round(math.log2(size / div)))
  for url in [False, True]:
    show(f"variable cold {cold>>10} KiB, 12-byte ids (33 B), url={url}", variable(t, cold, 33, url, True, 2*div))
    show(f"  + halving tail, url={url}", variable(t, cold, 33, url, True, 2*div, tail=True))
