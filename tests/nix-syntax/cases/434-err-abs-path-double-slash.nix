x: /a//b
