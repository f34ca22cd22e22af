"""Evaluation: judging agent outputs (the AST tool-call check first; matching,
judges and paired statistics join it)."""
