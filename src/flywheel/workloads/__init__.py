"""Workloads: the kinds of job an agent does, as datasets of requests with a
way to tell a right answer. BFCL ships with the project; users bring JSONL."""
