"""The bundled GAN trainers (DCGAN, LSGAN, WGAN, WGAN-GP, conditional DCGAN) that stream gandata's shards."""
