"""Video question answering with a perception-then-reasoning trace: VideoP2R's process-aware
GRPO (docs/videop2r.md). Rows in the public Video-R1 and VideoP2R formats (`rows`), the
`<observation><think><answer>` template (`prompting`) and the rule rewards (`accuracy`,
`rewards`)."""
