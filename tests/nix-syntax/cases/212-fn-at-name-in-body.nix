self@{ ... }: self
