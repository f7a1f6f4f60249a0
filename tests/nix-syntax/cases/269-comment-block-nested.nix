/* outer /* inner */ still */ 1
