"""Prompt-latent diffusion for tail classes (METHOD.md §1, Eq. 1–6).

* :mod:`trcgl.diffusion.prompts` — English prompts p_n from a label set, the view and
  PadChest's English localisations, shortened to fit the CLIP tokenizer (77 tokens);
* :mod:`trcgl.diffusion.text` — the CLIP tokenizer (offline, from open_clip's BPE vocabulary)
  and the frozen CLIP text encoder;
* :mod:`trcgl.diffusion.conditioning` — Eq. 1–2: E_n = CLIPTextEncoder(tokenize(p_n)) and
  E_cond = concat_seq(C, E_n) with m learnable context vectors C (and Eq. 4's unconditional
  branch from the empty prompt).
"""
