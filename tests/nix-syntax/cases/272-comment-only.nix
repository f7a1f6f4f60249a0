# nothing here
/* or here */
