# SPDX-License-Identifier: MIT
"""The seed blog post's eight lines, filled in and run as scripts: once with
`from multiprocessing import Pool`, once with only the import changed to `from coremap import
Pool`; the results must be the same (compared as JSON: coremap's results are JSON values, so the
seed's tuple comes back as a list)."""
import json
import os
import subprocess
import sys

import coremap

SEED = '''\
{import_line}
import hashlib, json, sys

def my_function( a_single_argument ):
    # e.g. "accepts a filename and returns results in a tuple"
    with open(a_single_argument, "rb") as f:
        data = f.read()
    return (a_single_argument, len(data), hashlib.sha256(data).hexdigest())

my_data_list = sorted(sys.argv[1:])
my_pool = Pool()
my_results = my_pool.map( my_function, my_data_list )
print(json.dumps(my_results))
'''

THREEPLE = '''\
{import_line}
import json

def my_function( threeple_arg ):
    arg_1, arg_2, arg_3 = threeple_arg
    return arg_1 * arg_2 + arg_3

if __name__ == "__main__":
    my_data_list = [(i, i + 1, i % 7) for i in range(200)]
    my_pool = Pool(5)
    print(json.dumps(my_pool.map( my_function, my_data_list )))
    #my_results = [my_func(item) for item in my_data_list]
    print(json.dumps([my_function(item) for item in my_data_list]))
'''


def run_script(tmp_path, name, text, args=()):
    path = tmp_path / name
    path.write_text(text)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(coremap.__file__))))
    done = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_seed_unguarded_same_results_as_multiprocessing(tmp_path):
    files = []
    for i in range(30):
        p = tmp_path / f"f{i:02d}.txt"
        p.write_bytes(os.urandom(i * 997))
        files.append(str(p))
    pool_out = run_script(tmp_path, "seed_mp.py", SEED.format(import_line="from multiprocessing import Pool"), files)
    coremap_out = run_script(tmp_path, "seed_cm.py", SEED.format(import_line="from coremap import Pool"), files)
    assert json.loads(coremap_out) == json.loads(pool_out)
    assert len(json.loads(pool_out)) == 30


def test_seed_threeple_and_serial_line(tmp_path):
    pool_out = run_script(tmp_path, "three_mp.py", THREEPLE.format(import_line="from multiprocessing import Pool"))
    coremap_out = run_script(tmp_path, "three_cm.py", THREEPLE.format(import_line="from coremap import Pool"))
    assert coremap_out == pool_out
    parallel, serial = coremap_out.splitlines()
    assert parallel == serial
