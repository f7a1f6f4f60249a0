''
	tabbed
	  more
''
