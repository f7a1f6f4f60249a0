{ }.a.b or { }.c or 2
