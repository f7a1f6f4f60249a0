let {
  body = y;
}
