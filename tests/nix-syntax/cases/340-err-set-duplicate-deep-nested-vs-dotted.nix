{
  services = {
    openssh = {
      enable = true;
    };
  };
  services.openssh.enable = false;
}
