`ls`
