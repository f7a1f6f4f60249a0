{ }.a or 1
