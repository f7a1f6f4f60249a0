"a\nb\tc\rd\\e\"f\${g}"
