"""From tensors to an archive: which tensors and which spec (`selection`), the one write loop
(`write`: encode, measure, store, write), and worker processes (`parallel`)."""
