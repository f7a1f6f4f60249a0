final: prev: {
  hello = prev.hello.overrideAttrs (old: {
    pname = "hello-patched";
    patches = (old.patches or [ ]) ++ [ ./hello.patch ];
  });
  myTool = final.callPackage ./my-tool { };
}
