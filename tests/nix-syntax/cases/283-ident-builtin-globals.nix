[ true false null builtins import toString map throw abort baseNameOf dirOf derivation isNull removeAttrs ]
