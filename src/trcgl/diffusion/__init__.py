"""Prompt-latent diffusion for tail classes (docs/method.md §1, Eq. 1–6).

* :mod:`trcgl.diffusion.prompts` — English prompts p_n from a label set, the view and
  PadChest's English localisations, shortened to fit the CLIP tokenizer (77 tokens);
* :mod:`trcgl.diffusion.text` — the CLIP tokenizer (offline, from open_clip's BPE vocabulary)
  and the frozen CLIP text encoder;
* :mod:`trcgl.diffusion.conditioning` — Eq. 1–2: E_n = CLIPTextEncoder(tokenize(p_n)) and
  E_cond = concat_seq(C, E_n) with m learnable context vectors C (and Eq. 4's unconditional
  branch from the empty prompt);
* :mod:`trcgl.diffusion.components` — the latent diffusion model: diffusers UNet, VAE and
  noise scheduler from a Stable-Diffusion-style folder, or small ones built for a CPU;
* :mod:`trcgl.diffusion.vae_train` — a short VAE fit for the small CPU configuration;
* :mod:`trcgl.diffusion.train` — Eq. 3: the noise-prediction loss on VAE latents, training the
  context vectors (always) and the UNet (frozen / LoRA / full), with condition dropout;
* :mod:`trcgl.diffusion.generator_folder` — a trained generator's folder: C, the LoRA adapter
  and a fingerprinted reference to the base model (no copy of it), or the whole generator;
* :mod:`trcgl.diffusion.sample` — Eq. 4–6: classifier-free guidance, DDIM (or any diffusers
  scheduler), VAE decoding to grayscale images.
"""
