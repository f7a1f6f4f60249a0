true ->
