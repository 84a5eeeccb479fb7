"""python -m kgqa.report: the same as kgqa-report."""
from kgqa.report import main

main()
