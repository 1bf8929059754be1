"""The trainers and their papers' defaults, without importing torch (the command line's help reads them)."""

KINDS = ("dcgan", "lsgan", "wgan", "wgan-gp", "cdcgan")
CRITIC_CONDITIONING = ("input", "projection", "both")  # cdcgan: how the critic sees the label

# the papers' defaults (DCGAN, LSGAN, WGAN, WGAN-GP; pytorch/examples): batch, optimiser, critic normalisation,
# critic steps per G step. Batch 64 for the DCGAN family is pytorch/examples' (the paper used 128): at equal images
# shown, 128 halves the updates, and in benchmarks/quality.py 3 of 5 seeds of dcgan at 128 never left "D wins" where
# the reference at 64 learned. One-sided label smoothing 0.1 for dcgan (Salimans et al. 2016; pytorch/examples has
# none): without it dcgan's median seed was worse than the reference's and 5–8 of 64 runs ended above FD 550 (README).
DEFAULTS = {
    "dcgan": dict(batch=64, opt="adam", lr=2e-4, betas=(0.5, 0.999), critic_norm="batch", n_critic=1,
                  label_smoothing=0.1),
    "cdcgan": dict(batch=64, opt="adam", lr=2e-4, betas=(0.5, 0.999), critic_norm="batch", n_critic=1,
                   label_smoothing=0.0),
    "lsgan": dict(batch=64, opt="adam", lr=2e-4, betas=(0.5, 0.999), critic_norm="batch", n_critic=1,
                 label_smoothing=0.0),
    "wgan": dict(batch=64, opt="rmsprop", lr=5e-5, betas=None, critic_norm="batch", n_critic=5,
                 label_smoothing=0.0),
    "wgan-gp": dict(batch=64, opt="adam", lr=1e-4, betas=(0.0, 0.9), critic_norm="group", n_critic=5,
                    label_smoothing=0.0),
}

PAPERS = {
    "dcgan": "Radford et al. 2015 (DCGAN), as in pytorch/examples: the non-saturating loss, Adam 2e-4 (0.5, 0.999)",
    "lsgan": "Mao et al. 2017 (LSGAN): least-squares loss on the DCGAN networks, Adam 2e-4 (0.5, 0.999)",
    "wgan": "Arjovsky et al. 2017 (WGAN): weight clipping ±0.01, RMSprop 5e-5, 5 critic steps (100 in warm-up)",
    "wgan-gp": "Gulrajani et al. 2017 (WGAN-GP): gradient penalty 10, Adam 1e-4 (0, 0.9), 5 critic steps, no "
               "batch norm in the critic",
    "cdcgan": "conditional DCGAN on labelled shards: label embedding and class-conditional batch norm in G, a "
              "projection critic (Miyato & Koyama 2018) with the label also as input planes",
}

RESOLUTIONS = (32, 64, 128)  # image sides the generators and critics are built for (models.py)
