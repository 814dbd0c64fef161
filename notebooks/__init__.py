"""Example notebooks (01 explore data, 02 train and evaluate, 03 export and deploy, 04 compare losses).

`python -m notebooks.run_all` executes them all without rewriting the committed files; see run_all.py.
"""
