"""Teacher side of RLPT: clients that query a strong LLM, a response cache, prompt templates and
the rewriter that turns a document window into a better, re-tokenized continuation."""
