"""Writes findings.md from audit.json (python results/audit/findings.py results/audit): nothing in it is typed."""

import json
import os
import sys


def main(folder: str) -> None:
  with open(os.path.join(folder, 'audit.json')) as f:
    audit = json.load(f)
  summary = audit['summary']
  lines = ['# What the audit found', '',
           'Written by `python results/audit/findings.py results/audit` from `audit.json` (see README.md for the '
           'audit command).', '',
           f'{summary["n_files"]} files, {summary["n_images"]} decodable images, {summary["n_undecodable"]} '
           f'undecodable, {summary["n_unreadable"]} unreadable; {summary["n_exact_pairs"]} exact and '
           f'{summary["n_near_pairs"]} near copy pairs (near: {audit["near_copy_measure"]} of at least '
           f'{audit["near_threshold"]}); {summary["n_files_with_metadata"]} files carry metadata.', '']
  for folder_stats in audit['folders']:
    lines += [f'## {folder_stats["folder"]}', '', f'Largest to smallest class: '
              f'{folder_stats["largest_to_smallest_class"]}.', '',
              '| class | images | share | width min / median / max | height min / median / max | modes |',
              '|---|---|---|---|---|---|']
    for name, row in folder_stats['classes'].items():
      w, h = row['width'], row['height']
      modes = ', '.join(f'{m} {n}' for m, n in row['modes'].items())
      lines.append(f'| {name} | {row["n_images"]} | {row["share"]:.1%} | {w["min"]} / {w["median"]} / {w["max"]} | '
                   f'{h["min"]} / {h["median"]} / {h["max"]} | {modes} |')
    lines.append('')
  lines += ['## Copy pairs', '', '| a | b | kind | score |', '|---|---|---|---|']
  lines += [f'| `{p["a"]}` | `{p["b"]}` | {p["kind"]} | {p["score"]:.3f} |' for p in audit['pairs']]
  lines += ['', '## Files with metadata', '', '| file | found |', '|---|---|']
  lines += [f'| `{m["path"]}` | {", ".join(m["found"])} |' for m in audit['metadata']]
  with open(os.path.join(folder, 'findings.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
  main(*sys.argv[1:])
