let
  host = "h";
in
{
  networking.hostName = host;
}
