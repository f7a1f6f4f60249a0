# SPDX-License-Identifier: MIT
"""Property test of the machine-file editor: for many shapes of a hand-written
machines/HOST/default.nix, workspace.create {name, type} either fails cleanly (an allowed
error kind, work tree, .git/index and state byte-identical) or makes exactly the intended
edit: (1) one contiguous span inserted, every other byte unchanged; (2) nix-instantiate
--parse accepts the result; (3) real Nix, evaluating the file with stub module arguments,
gives the new entry the asked type, the lowest free address of its range (computed here
from the old file's Nix values) and ./workspaces/NAME.nix, and every old entry its old
values; (4) workspace.list reports the same, old entries unchanged; (5) the inserted lines
copy their neighbours (sibling indentation, CRLF only in CRLF files, tabs in tab files).

Shapes are generated systematically (containers x entry counts x layouts x headers),
plus hand-written odd shapes and seeded random comment/whitespace mutations of the
fixtures. A shape marked `must` is one the fixtures contract says the daemon edits, so a
refusal fails it; for the others a clean refusal is accepted and counted."""
import json
import os
import random
import subprocess
import sys
import unittest

from wslib import DaemonTest, Daemon, fixture, nix_parse_ok, have, main

SUBNET = "192.168.83."
RANGES = {"vm": (10, 49), "container": (50, 89), "incus": (90, 129)}
ALLOWED_ERRORS = {"CONFIG_UNPARSABLE", "CONFIG_UNSUPPORTED", "RANGE_EXHAUSTED", "EXISTS"}
REFUSED = []

EVAL_NIX = r"""
let
  recMerge = a: b: a // builtins.mapAttrs (n: v:
    if builtins.isAttrs v && builtins.isAttrs (a.${n} or null) then recMerge a.${n} v else v) b;
  lib = {
    mkIf = c: x: x;
    mkMerge = xs: builtins.foldl' recMerge { } xs;
    mkDefault = x: x;
    mkForce = x: x;
    mkOverride = p: x: x;
    mkOption = x: x;
    mkEnableOption = x: x;
    optionalAttrs = c: x: if c then x else { };
    recursiveUpdate = recMerge;
    types = { bool = "bool"; str = "str"; int = "int"; attrsOf = t: t; submodule = t: t; };
  };
  f = import @FILE@;
  m0 = if builtins.isFunction f then f { config = { }; inherit lib; pkgs = { }; } else f;
  m = if @MODULE@ then m0.config else m0;
  ws = (m.sandboxed-workspace or { }).workspaces or { };
in builtins.mapAttrs (n: v: { type = v.type; ip = v.ip; config = toString v.config; }) ws
"""


def nix_eval(tmp, path, module):
    """{name: {type, ip, config}} of the machine file as real Nix evaluates it."""
    expr = EVAL_NIX.replace("@FILE@", path).replace("@MODULE@", "true" if module else "false")
    epath = os.path.join(tmp, "eval-%d.nix" % len(os.listdir(tmp)))
    with open(epath, "w") as f:
        f.write(expr)
    p = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", epath],
                       capture_output=True)
    if p.returncode != 0:
        raise AssertionError("nix eval failed: " + p.stderr.decode(errors="replace"))
    return json.loads(p.stdout)


def single_insertion(old, new):
    """(offset, inserted bytes) when @new is @old with one span inserted, else None."""
    p = 0
    while p < len(old) and p < len(new) and old[p] == new[p]:
        p += 1
    s = 0
    while s < len(old) - p and s < len(new) - p and old[len(old) - 1 - s] == new[len(new) - 1 - s]:
        s += 1
    if p + s != len(old):
        return None
    return p, new[p:len(new) - s]


def lowest_free(type, taken):
    lo, hi = RANGES[type]
    for n in range(lo, hi + 1):
        if SUBNET + str(n) not in taken:
            return SUBNET + str(n)
    return None


def indent_of(line):
    return line[:len(line) - len(line.lstrip(b" \t"))]


# --------------------------------------------------------------------------------------
# shapes


class Shape:
    def __init__(self, key, text, name, type, must=False, module=False, sibs=None,
                 expect_err=None, eol=b"\n", tabs=False):
        self.key = key
        self.text = text
        self.name = name
        self.type = type
        self.must = must
        self.module = module
        self.sibs = sibs or []
        self.expect_err = expect_err
        self.eol = eol
        self.tabs = tabs


EXISTING = [("a", "vm", 10), ("b", "container", 50), ("c", "vm", 12)]
COMMENTS = ["# note: } ; not code", "/* { } ; */", "# sandboxed-workspace = { };"]


class Layout:
    def __init__(self, key, unit="  ", eol="\n", final=True, comments=False, blank=False):
        self.key = key
        self.unit = unit
        self.eol = eol
        self.final = final
        self.comments = comments
        self.blank = blank


LAYOUTS = [
    Layout("lf2"),
    Layout("crlf", eol="\r\n"),
    Layout("tabs-nofinal", unit="\t", final=False),
    Layout("sp4-comments", unit="    ", comments=True),
    Layout("comments-blank", comments=True, blank=True),
    Layout("crlf-tabs-comments", unit="\t", eol="\r\n", comments=True),
    Layout("sp4-nofinal-blank", unit="    ", final=False, blank=True),
]

HEADERS = [
    ("std", ["{ config, lib, pkgs, ... }:"], None),
    ("noellipsis", ["{ config, lib, pkgs }:"], None),
    ("at-front", ["args@{ config, lib, ... }:"], None),
    ("at-back", ["{ lib, ... }@args:"], None),
    ("let", ["{ config, lib, pkgs, ... }:", "", "let", "U hostName = \"atlas\";", "in"], None),
    ("with", ["{ config, lib, pkgs, ... }:", "", "with lib;", ""], None),
    ("rec", ["{ config, lib, pkgs, ... }:"], "rec"),
    ("let-with", ["{ lib, ... }:", "let", "U x = { y = 1; };", "in", "with lib;"], None),
]


def entry_lines(prefix, name, type, n, ind, U, oneline=False):
    body = ['type = "%s";' % type, "config = ./workspaces/%s.nix;" % name,
            'ip = "%s%d";' % (SUBNET, n)]
    if oneline:
        return [ind + prefix + " = { " + " ".join(body) + " };"]
    return [ind + prefix + " = {"] + [ind + U + b for b in body] + [ind + "};"]


def entries_block(count, ind, U, lay, prefix_fn, quoted=False):
    out = []
    for i, (name, type, n) in enumerate(EXISTING[:count]):
        if i and lay.blank:
            out.append("")
        if i and lay.comments:
            out.append(ind + COMMENTS[i % len(COMMENTS)])
        out += entry_lines(prefix_fn('"%s"' % name if quoted else name), name, type, n, ind, U)
    if count and lay.comments:
        out.append(ind + "/* trailing: }; */")
    return out


def container(kind, count, U, lay):
    """Lines (indented for the top-level set) that declare the entries."""
    I, II, III = U, U * 2, U * 3
    if kind == "nested":
        lines = [I + "sandboxed-workspace = {", II + "enable = true;"]
        lines += entries_block(count, II, U, lay, lambda n: "workspaces." + n)
        lines += [I + "};"]
        sibs = [II + "workspaces.a = {"] if count else [II + "enable = true;"]
    elif kind == "set":
        lines = [I + "sandboxed-workspace = {", II + "enable = true;"]
        if count:
            lines += [II + "workspaces = {"]
            lines += entries_block(count, III, U, lay, lambda n: n)
            lines += [II + "};"]
            sibs = [III + "a = {"]
        else:
            lines += [II + "workspaces = { };"]
            sibs = []
        lines += [I + "};"]
    elif kind == "dotted":
        lines = [I + "sandboxed-workspace.enable = true;"]
        lines += entries_block(count, I, U, lay, lambda n: "sandboxed-workspace.workspaces." + n)
        sibs = [I + "sandboxed-workspace.workspaces.a = {"] if count else \
            [I + "sandboxed-workspace.enable = true;"]
    elif kind == "mixed":
        lines = [I + "sandboxed-workspace = {", II + "enable = true;"]
        if count:
            lines += entry_lines("workspaces.a", "a", "vm", 10, II, U)
        lines += [I + "};"]
        if lay.blank:
            lines.append("")
        for name, type, n in EXISTING[1:count]:
            if lay.comments:
                lines.append(I + "# dotted below the block; Nix merges them")
            lines += entry_lines("sandboxed-workspace.workspaces." + name, name, type, n, I, U)
        sibs = [II + "workspaces.a = {"] if count else [II + "enable = true;"]
        if count > 1:
            sibs.append(I + "sandboxed-workspace.workspaces.b = {")
    elif kind == "quoted-top":
        lines = [I + '"sandboxed-workspace" = {', II + "enable = true;"]
        lines += entries_block(count, II, U, lay, lambda n: "workspaces." + n, quoted=True)
        lines += [I + "};"]
        sibs = [II + 'workspaces."a" = {'] if count else [II + "enable = true;"]
    elif kind == "quoted-ws":
        lines = [I + "sandboxed-workspace.enable = true;", I + 'sandboxed-workspace."workspaces" = {']
        lines += entries_block(count, II, U, lay, lambda n: n, quoted=True)
        lines += [I + "};"]
        sibs = [II + '"a" = {'] if count else []
    else:
        raise ValueError(kind)
    return lines, sibs


def render(lines, U, lay):
    text = lay.eol.join(l.replace("U ", U, 1) if l.startswith("U ") else l for l in lines)
    if lay.final:
        text += lay.eol
    return text.encode()


def machine(header, body, U, lay, rec=None, pre=None, post=None):
    lines = list(header) + [("rec {" if rec else "{")]
    lines += pre if pre is not None else [U + 'networking.hostName = "atlas";', ""]
    lines += body
    lines += post if post is not None else ["", U + 'environment.etc."motd".text = "hi";']
    lines += ["}"]
    return render(lines, U, lay)


def systematic():
    shapes = []
    kinds = ["nested", "set", "dotted", "mixed", "quoted-top", "quoted-ws"]
    reqs = [("nw", "vm"), ("new-ws", "container"), ("x2", "incus")]
    k = 0
    for kind in kinds:
        for count in (0, 1, 3):
            for j in range(3):
                lay = LAYOUTS[(k * 5 + j * 3) % len(LAYOUTS)]
                hkey, header, rec = HEADERS[(k + j * 3) % len(HEADERS)]
                name, type = reqs[(k + j) % len(reqs)]
                body, sibs = container(kind, count, lay.unit, lay)
                text = machine(header, body, lay.unit, lay, rec=rec)
                sibs = [s.encode() for s in sibs]
                shapes.append(Shape("%s-%d-%s-%s-%s" % (kind, count, lay.key, hkey, type), text,
                                    name, type, must=not kind.startswith("quoted"), sibs=sibs,
                                    eol=lay.eol.encode(), tabs=lay.unit == "\t"))
                k += 1
    return shapes


def S(text):
    return text.encode()


H = "{ config, lib, pkgs, ... }:\n"
ENT = ('workspaces.a = { type = "vm"; config = ./workspaces/a.nix; ip = "192.168.83.10"; };')
BLK = ('  sandboxed-workspace = {\n    enable = true;\n'
       '    workspaces.a = {\n      type = "vm";\n      config = ./workspaces/a.nix;\n'
       '      ip = "192.168.83.10";\n    };\n  };\n')
SIB_A = [b"    workspaces.a = {"]


def specials():
    sh = []
    add = lambda *a, **kw: sh.append(Shape(*a, **kw))
    # no block at all: a new block at the end of the top-level set
    for lay in (LAYOUTS[0], LAYOUTS[1], LAYOUTS[2], LAYOUTS[6]):
        U = lay.unit
        text = machine(["{ config, lib, pkgs, ... }:"], [], U, lay,
                       post=[U + "# NAT upstream } ;", U + 'networking.sandbox.upstreamInterface = "eno1";'])
        add("noblock-" + lay.key, text, "dev", "container", must=True,
            sibs=[(U + "networking.hostName").encode()], eol=lay.eol.encode(), tabs=U == "\t")
    # one-line files
    add("oneline-0", S(H.strip() + " { sandboxed-workspace = { enable = true; }; }\n"), "b", "vm")
    add("oneline-1", S(H.strip() + " { sandboxed-workspace = { enable = true; workspaces = { a = "
                       '{ type = "vm"; config = ./workspaces/a.nix; ip = "192.168.83.10"; }; }; }; }\n'),
        "b", "container", must=True)
    add("oneline-3-nofinal", S("{ lib, ... }: { sandboxed-workspace.enable = true; "
                               + ENT.replace("workspaces.", "sandboxed-workspace.workspaces.") + " "
                               + ENT.replace("workspaces.a", "sandboxed-workspace.workspaces.b")
                               .replace("a.nix", "b.nix").replace(".10", ".11") + " "
                               + ENT.replace("workspaces.a", "sandboxed-workspace.workspaces.c")
                               .replace("a.nix", "c.nix").replace(".10", ".13") + " }"),
        "d", "vm")
    add("oneline-nested-comment", S(H + "{ sandboxed-workspace = { enable = true; " + ENT
                                    + " /* } ; */ }; # end }\n}\n"), "b", "vm")
    # wrappers
    add("mkif-top", S(H + "lib.mkIf config.services.x.enable {\n" + BLK + "}\n"), "nw", "vm", sibs=SIB_A)
    add("mkif-paren", S(H + "(lib.mkIf (config.services.x.enable) {\n" + BLK + "})\n"), "nw", "vm",
        sibs=SIB_A)
    add("mkmerge-top", S(H + "\nlib.mkMerge [\n  {\n    networking.hostName = \"box\";\n  }\n"
                         "  (lib.mkIf config.services.xserver.enable {\n"
                         "    sandboxed-workspace = {\n      enable = true;\n"
                         "      workspaces.gui = {\n        type = \"vm\";\n"
                         "        config = ./workspaces/gui.nix;\n        ip = \"192.168.83.10\";\n"
                         "      };\n    };\n  })\n]\n"), "gui2", "vm", must=True,
        sibs=[b"      workspaces.gui = {"])
    add("mkmerge-split", S(H + "lib.mkMerge [\n  { sandboxed-workspace.enable = true; }\n"
                           "  {\n    sandboxed-workspace.workspaces.a = {\n      type = \"vm\";\n"
                           "      config = ./workspaces/a.nix;\n      ip = \"192.168.83.10\";\n"
                           "    };\n  }\n]\n"), "nw", "vm",
        sibs=[b"    sandboxed-workspace.workspaces.a = {"])
    add("mkmerge-two-blocks", S(H + "lib.mkMerge [\n  {\n  " + BLK.replace("\n  ", "\n    ")
                                + "  }\n  (lib.mkIf true {\n    sandboxed-workspace.workspaces.b = {"
                                " type = \"container\"; config = ./workspaces/b.nix;"
                                " ip = \"192.168.83.50\"; };\n  })\n]\n"), "nw", "container")
    add("values-mkdefault-mkforce", S(H + "{\n  sandboxed-workspace = {\n    enable = lib.mkDefault true;\n"
                                      "    workspaces.a = {\n      type = lib.mkDefault \"vm\";\n"
                                      "      config = ./workspaces/a.nix;\n"
                                      "      ip = lib.mkForce \"192.168.83.10\";\n    };\n  };\n}\n"),
        "nw", "vm", sibs=SIB_A)
    add("entry-mkif", S(H + "{\n  sandboxed-workspace = {\n    enable = true;\n"
                        "    workspaces.a = lib.mkIf true {\n      type = \"vm\";\n"
                        "      config = ./workspaces/a.nix;\n      ip = \"192.168.83.10\";\n"
                        "    };\n  };\n}\n"), "nw", "vm", sibs=[b"    workspaces.a = lib.mkIf"])
    add("block-mkforce", S(H + "{\n  sandboxed-workspace = lib.mkForce {\n    enable = true;\n"
                           "    workspaces.a = {\n      type = \"vm\";\n      config = ./workspaces/a.nix;\n"
                           "      ip = \"192.168.83.10\";\n    };\n  };\n}\n"), "nw", "vm", sibs=SIB_A)
    add("block-paren-mkdefault", S(H + "{\n  sandboxed-workspace = (lib.mkDefault {\n    enable = true;\n"
                                   "    workspaces.a = {\n      type = \"vm\";\n"
                                   "      config = ./workspaces/a.nix;\n"
                                   "      ip = \"192.168.83.10\";\n    };\n  });\n}\n"), "nw", "vm",
        sibs=SIB_A)
    # module form
    add("module", S(H + "{\n  imports = [ ];\n  options.my.flag = lib.mkOption {\n"
                    "    type = lib.types.bool;\n    default = false;\n  };\n  config = {\n"
                    "    sandboxed-workspace = {\n      enable = true;\n      workspaces.a = {\n"
                    "        type = \"vm\";\n        config = ./workspaces/a.nix;\n"
                    "        ip = \"192.168.83.10\";\n      };\n    };\n  };\n}\n"), "nw", "container",
        module=True, sibs=[b"      workspaces.a = {"])
    add("module-mkif", S(H + "let\n  cfg = config.my;\nin\n{\n  imports = [ ./hw.nix ];\n"
                         "  options.my.enable = lib.mkEnableOption \"my\";\n"
                         "  config = lib.mkIf cfg.enable {\n    sandboxed-workspace.enable = true;\n"
                         "    sandboxed-workspace.workspaces.a = {\n      type = \"vm\";\n"
                         "      config = ./workspaces/a.nix;\n      ip = \"192.168.83.10\";\n"
                         "    };\n  };\n}\n"), "nw", "vm", module=True,
        sibs=[b"    sandboxed-workspace.workspaces.a = {"])
    add("module-empty-config", S(H + "{\n  imports = [ ];\n  options = { };\n  config = {\n"
                                 "    networking.hostName = \"atlas\";\n  };\n}\n"), "nw", "vm",
        module=True, sibs=[b"    networking.hostName"])
    # values that are let / // expressions
    add("value-let", S(H + "{\n  sandboxed-workspace = {\n    enable = true;\n"
                       "    workspaces.a = let t = \"vm\"; in {\n      type = t;\n"
                       "      config = ./workspaces/a.nix;\n      ip = \"192.168.83.10\";\n"
                       "    };\n  };\n}\n"), "nw", "vm", sibs=[b"    workspaces.a = let"])
    add("value-update", S(H + "let\n  base = { type = \"vm\"; config = ./workspaces/base.nix; };\nin\n{\n"
                          "  sandboxed-workspace = {\n    enable = true;\n"
                          "    workspaces.a = base // {\n      ip = \"192.168.83.10\";\n    };\n"
                          "    workspaces.b = base // { ip = \"192.168.83.11\"; };\n  };\n}\n"),
        "nw", "vm", sibs=[b"    workspaces.a = base"])
    add("computed-ip-let", S(H + "let\n  subnet = \"192.168.83\";\nin\n{\n  sandboxed-workspace = {\n"
                             "    enable = true;\n    workspaces.a = {\n      type = \"container\";\n"
                             "      config = ./workspaces/a.nix;\n      ip = \"${subnet}.50\";\n"
                             "    };\n  };\n}\n"), "nw", "container", sibs=SIB_A)
    # strings and comments that look like code around the block
    add("strings-near", S(H + "{\n  users.motd = \"sandboxed-workspace = { ${\"}\"} };\";\n"
                          "  environment.etc.x.text = ''\n    workspaces.fake = { }; ''${no} }\n"
                          "    ${config.networking.hostName} ;\n  '';\n" + BLK
                          + "  environment.etc.y.text = ''}; ${\"}\"}'';\n}\n"), "nw", "vm",
        must=True, sibs=SIB_A)
    add("comments-inside", S(H + "{\n  sandboxed-workspace = { # opens }\n    enable = true; /* ; } */\n"
                             "    workspaces.a = {\n      type = \"vm\";\n"
                             "      config = ./workspaces/a.nix;\n      ip = \"192.168.83.10\";\n"
                             "    }; # a } here\n    /* closing }; soon */\n  }; # end };\n}\n"
                             "# after the set }\n"), "nw", "vm", must=True, sibs=SIB_A)
    add("enable-false-only", S(H + "{\n  sandboxed-workspace = {\n    enable = false;\n  };\n}\n"),
        "nw", "vm", sibs=[b"    enable = false;"])
    add("enable-dotted-only", S(H + "{\n  networking.hostName = \"x\";\n"
                                "  sandboxed-workspace.enable = true;\n}\n"), "nw", "incus",
        must=True, sibs=[b"  sandboxed-workspace.enable = true;"])
    add("plain-set-no-function", S("{\n  sandboxed-workspace = {\n    enable = true;\n"
                                   "    workspaces.a = {\n      type = \"vm\";\n"
                                   "      config = ./workspaces/a.nix;\n      ip = \"192.168.83.10\";\n"
                                   "    };\n  };\n}\n"), "nw", "vm", must=True, sibs=SIB_A)
    add("let-bound-block", S(H + "let\n  sw = {\n    enable = true;\n    workspaces.a = {\n"
                             "      type = \"vm\";\n      config = ./workspaces/a.nix;\n"
                             "      ip = \"192.168.83.10\";\n    };\n  };\nin\n"
                             "{\n  sandboxed-workspace = sw;\n}\n"), "nw", "vm", sibs=SIB_A)
    add("other-type-holds-ip", S(H + "{\n  sandboxed-workspace = {\n    enable = true;\n"
                                 "    workspaces.odd = {\n      type = \"vm\";\n"
                                 "      config = ./workspaces/odd.nix;\n"
                                 "      ip = \"192.168.83.50\";\n    };\n  };\n}\n"),
        "nw", "container", must=True, sibs=[b"    workspaces.odd = {"])
    add("quoted-names-set", S(H + "{\n  sandboxed-workspace = {\n    enable = true;\n"
                              "    workspaces = {\n      \"my-a\" = { type = \"vm\"; config = ./workspaces/my-a.nix;"
                              " ip = \"192.168.83.10\"; };\n      \"my-b\" = { type = \"vm\";"
                              " config = ./workspaces/my-b.nix; ip = \"192.168.83.11\"; };\n"
                              "    };\n  };\n}\n"), "my-c", "vm", must=True,
        sibs=[b"      \"my-a\" = {"])
    add("trailing-comment-after-set", S(H + "{\n" + BLK + "}\n# } ; trailing\n/* { */\n"),
        "nw", "vm", must=True, sibs=SIB_A)
    add("value-inherit-ip", S(H + "let\n  ip = \"192.168.83.10\";\nin\n{\n  sandboxed-workspace = {\n"
                              "    enable = true;\n    workspaces.a = {\n      inherit ip;\n"
                              "      type = \"vm\";\n      config = ./workspaces/a.nix;\n    };\n  };\n}\n"),
        "nw", "vm", sibs=SIB_A)
    add("block-rec", S(H + "{\n  sandboxed-workspace = rec {\n    enable = true;\n"
                       "    workspaces.a = {\n      type = \"vm\";\n      config = ./workspaces/a.nix;\n"
                       "      ip = \"192.168.83.10\";\n    };\n  };\n}\n"), "nw", "vm", sibs=SIB_A)
    add("dotted-workspaces-set", S(H + "{\n  sandboxed-workspace.enable = true;\n"
                                   "  sandboxed-workspace.workspaces = {\n    a = {\n      type = \"vm\";\n"
                                   "      config = ./workspaces/a.nix;\n      ip = \"192.168.83.10\";\n"
                                   "    };\n  };\n}\n"), "nw", "vm", must=True, sibs=[b"    a = {"])
    add("dynamic-attr", S(H + "{\n  ${\"sandboxed-workspace\"}.workspaces.a = {\n      type = \"vm\";\n"
                          "      config = ./workspaces/a.nix;\n      ip = \"192.168.83.10\";\n  };\n}\n"),
        "nw", "vm")
    add("entries-before-enable", S(H + "{\n  sandboxed-workspace.workspaces.a = { type = \"vm\";"
                                   " config = ./workspaces/a.nix; ip = \"192.168.83.10\"; };\n"
                                   "  sandboxed-workspace = {\n    enable = true;\n  };\n}\n"),
        "nw", "vm", must=True, sibs=[b"  sandboxed-workspace.workspaces.a", b"    enable = true;"])
    # errors the contract names
    add("exists", S(H + "{\n" + BLK + "}\n"), "a", "container", expect_err="EXISTS")
    add("exists-dotted", S(H + "{\n  sandboxed-workspace.workspaces.\"q\" = { type = \"vm\";"
                           " config = ./workspaces/q.nix; ip = \"192.168.83.10\"; };\n}\n"),
        "q", "vm", expect_err="EXISTS")
    full = "".join('      i%d = { type = "incus"; config = ./workspaces/i%d.nix; ip = "192.168.83.%d"; };\n'
                   % (n, n, n) for n in range(90, 130))
    add("incus-full", S(H + "{\n  sandboxed-workspace = {\n    enable = true;\n    workspaces = {\n"
                        + full + "    };\n  };\n}\n"), "i130", "incus", expect_err="RANGE_EXHAUSTED")
    add("unparsable", fixture("14-unparsable.nix"), "x", "vm", expect_err="CONFIG_UNPARSABLE")
    return sh


# --------------------------------------------------------------------------------------
# random comment / whitespace mutations of the fixtures

FIXTURE_REQS = [
    ("01-no-block.nix", "dev", "container"), ("02-nested-block.nix", "lab", "vm"),
    ("03-dotted-top.nix", "web", "container"), ("04-workspaces-set.nix", "cache", "vm"),
    ("05-with-lib-comments.nix", "blog", "container"), ("06-crlf.nix", "win2", "container"),
    ("07-tabs-no-final-newline.nix", "tab2", "vm"), ("08-one-line.nix", "b", "container"),
    ("09-mixed-merge.nix", "ml-two", "incus"), ("10-mkmerge-top.nix", "gui2", "vm"),
    ("11-computed-ip.nix", "gamma", "container"), ("12-container-range-full.nix", "c90", "container"),
    ("13-rec-and-inherit.nix", "plain", "vm"), ("15-hand-edit-conflicts.nix", "four", "container"),
]
DELIMS = set(b" \t\r\n{}[]();=:,")


def token_boundaries(src):
    """Offsets outside strings and comments next to a delimiter (where Nix allows layout)."""
    out = []
    stack = []  # interpolation depths; each frame: [kind, brace depth]
    mode = "code"
    i = 0
    n = len(src)
    while i < n:
        c = src[i]
        if mode == "code":
            if i > 0 and (src[i - 1] in DELIMS or c in DELIMS) and not stack:
                out.append(i)
            if c == ord("#"):
                j = src.find(b"\n", i)
                i = n if j < 0 else j
                continue
            if src.startswith(b"/*", i):
                j = src.find(b"*/", i + 2)
                i = n if j < 0 else j + 2
                continue
            if c == ord('"'):
                mode = "dq"
            elif src.startswith(b"''", i):
                mode = "ind"
                i += 2
                continue
            elif c == ord("{") and stack:
                stack[-1][1] += 1
            elif c == ord("}") and stack:
                if stack[-1][1] == 0:
                    mode = stack.pop()[0]
                else:
                    stack[-1][1] -= 1
            i += 1
        elif mode == "dq":
            if c == ord("\\"):
                i += 2
                continue
            if c == ord('"'):
                mode = "code"
            elif src.startswith(b"${", i):
                stack.append(["dq", 0])
                mode = "code"
                i += 2
                continue
            i += 1
        else:
            if src.startswith(b"''", i):
                if i + 2 < n and src[i + 2] in b"$'\\":
                    i += 3
                    continue
                mode = "code"
                i += 2
                continue
            if src.startswith(b"${", i):
                stack.append(["ind", 0])
                mode = "code"
                i += 2
                continue
            i += 1
    if mode == "code" and not stack:
        out.append(n)
    return out


def nix_parse(text, tmp):
    path = os.path.join(tmp, "parse.nix")
    with open(path, "wb") as f:
        f.write(text)
    p = subprocess.run(["nix-instantiate", "--parse", path], capture_output=True)
    return p.stdout if p.returncode == 0 else None


def mutations(tmp):
    shapes = []
    for fi, (fname, name, type) in enumerate(FIXTURE_REQS):
        src = fixture(fname)
        crlf = b"\r\n" in src
        tabs = b"\n\t" in src
        nl = b"\r\n" if crlf else b"\n"
        sp = b"\t" if tabs else b" "
        pieces = [sp, nl, nl + nl, sp + b"# mutation } ; {" + nl, b"/* } ; { */", sp + sp, nl + sp]
        base_ast = nix_parse(src, tmp)
        for m in range(2):
            rng = random.Random(1000 * fi + m)
            bounds = token_boundaries(src)
            text = src
            made = 0
            for _ in range(40):
                if made == 4:
                    break
                bounds = token_boundaries(text)
                at = rng.choice(bounds)
                cand = text[:at] + rng.choice(pieces) + text[at:]
                if nix_parse(cand, tmp) == base_ast:
                    text = cand
                    made += 1
            err = "RANGE_EXHAUSTED" if fname.startswith("12-") else None
            shapes.append(Shape("mut-%s-%d" % (fname[:2], m), text, name, type, expect_err=err,
                                eol=b"\r\n" if crlf else b"\n", tabs=tabs))
    return shapes


# --------------------------------------------------------------------------------------


def describe(sh, old, resp=None, new=None, prop=""):
    out = ["property broken: " + prop,
           "shape: " + sh.key,
           "request: workspace.create %s" % json.dumps({"name": sh.name, "type": sh.type}),
           "input file:", old.decode(errors="replace")]
    if resp is not None:
        out += ["response:", json.dumps(resp)]
    if new is not None:
        out += ["daemon wrote:", new.decode(errors="replace")]
    return "\n".join(out)


class EditProperties(DaemonTest):
    def check_shape(self, sh):
        repo = self.make_repo(sh.text)
        d = Daemon(repo, verify="none")
        self.daemons.append(d)
        rel = repo.machine_rel
        mpath = os.path.join(repo.path, rel)
        old = repo.read(rel)
        parses = nix_parse_ok(mpath)
        old_eval = nix_eval(repo.tmp, mpath, sh.module) if parses else None
        before_list = d.call("workspace.list")
        snap = repo.snapshot()
        resp = d.create(sh.name, sh.type)
        new = repo.read(rel)
        fail = lambda prop: self.fail(describe(sh, old, resp, new if new != old else None, prop))

        want_ip = None
        if old_eval is not None:
            taken = {v["ip"] for v in old_eval.values()}
            want_ip = lowest_free(sh.type, taken)
        want_err = sh.expect_err
        if want_err is None and old_eval is not None and want_ip is None:
            want_err = "RANGE_EXHAUSTED"
        if want_err is None and old_eval is not None and sh.name in old_eval:
            want_err = "EXISTS"

        if "error" in resp:
            kind = resp["error"].get("data", {}).get("kind")
            after = repo.snapshot()
            if after != snap:
                changed = sorted(k for k in set(snap) | set(after) if snap.get(k) != after.get(k))
                fail("a failed create changed files: %s" % changed)
            if want_err is not None:
                if kind != want_err:
                    fail("expected error %s" % want_err)
                return
            if kind not in ALLOWED_ERRORS:
                fail("error kind %r is not a clean refusal" % kind)
            if sh.must:
                fail("the daemon refused a shape it must edit")
            REFUSED.append("%s: %s %s" % (sh.key, kind, resp["error"].get("message")))
            return
        if want_err is not None:
            fail("expected error %s, got a result" % want_err)
        self.assertIn("result", resp, describe(sh, old, resp, None, "a JSON-RPC result"))
        res = resp["result"]

        # (1) exactly one contiguous span inserted
        si = single_insertion(old, new)
        if si is None or not si[1]:
            fail("(1) not a single inserted span")
        p, ins = si
        # (2) Nix parses it
        if not nix_parse_ok(mpath):
            fail("(2) nix-instantiate --parse rejects the new file")
        # (3) real Nix evaluates the new entry to what was asked, old entries unchanged
        want = {"type": sh.type, "ip": want_ip,
                "config": os.path.join(repo.machine_dir, "workspaces", sh.name + ".nix")}
        try:
            new_eval = nix_eval(repo.tmp, mpath, sh.module)
        except AssertionError as e:
            fail("(3) the new file does not evaluate: %s" % e)
        if sorted(new_eval) != sorted(list(old_eval) + [sh.name]):
            fail("(3) Nix sees entries %s, wanted %s + %s" % (sorted(new_eval), sorted(old_eval),
                                                              sh.name))
        if new_eval[sh.name] != want:
            fail("(3) Nix evaluates the new entry to %r, wanted %r" % (new_eval[sh.name], want))
        for k, v in old_eval.items():
            if new_eval[k] != v:
                fail("(3) old entry %s became %r (was %r)" % (k, new_eval[k], v))
        if res["workspace"]["ip"] != want_ip or res["workspace"]["type"] != sh.type:
            fail("(3) the result reports %r" % res["workspace"])
        if not repo.exists("machines/%s/workspaces/%s.nix" % (repo.host, sh.name)):
            fail("the workspace file was not written")
        # (4) workspace.list: the new entry, every old entry unchanged
        lst = d.call("workspace.list")
        if "result" not in lst:
            fail("(4) workspace.list fails after the create: %r" % lst)
        after = {w["name"]: w for w in lst["result"]["workspaces"]}
        nw = after.get(sh.name)
        if nw is None or (nw["type"], nw["ip"], nw["config"]) != \
                (sh.type, want_ip, "./workspaces/%s.nix" % sh.name):
            fail("(4) workspace.list shows the new entry as %r" % nw)
        ins_line = new[:p].count(b"\n") + 1
        nls = ins.count(b"\n")
        if "result" in before_list:
            for w in before_list["result"]["workspaces"]:
                a = after.get(w["name"])
                if a is None:
                    fail("(4) old entry %s vanished from workspace.list" % w["name"])
                la, lb = a["source"]["line"], w["source"]["line"]
                ok_lines = {lb} if lb < ins_line else ({lb + nls} if lb > ins_line else {lb, lb + nls})
                strip = lambda x: {k: v for k, v in x.items() if k not in ("source", "state")}
                if strip(a) != strip(w) or la not in ok_lines or a["source"]["file"] != w["source"]["file"]:
                    fail("(4) old entry %s changed in workspace.list: %r -> %r" % (w["name"], w, a))
        # (5) layout copies the neighbours
        for i in range(p, p + len(ins)):
            if new[i] == ord("\n") and sh.eol == b"\r\n" and (i == 0 or new[i - 1] != ord("\r")):
                fail("(5) a bare LF in a CRLF file")
        if sh.eol == b"\n" and b"\r" in ins:
            fail("(5) a CR in an LF file")
        starts = [i for i in range(p, p + len(ins)) if i == 0 or new[i - 1] == ord("\n")]
        ls0 = new.rfind(b"\n", 0, p) + 1
        if ls0 < p and not new[ls0:p].strip(b" \t"):
            starts.insert(0, ls0)
        lines = [new[s:new.find(b"\n", s) if new.find(b"\n", s) >= 0 else len(new)] for s in starts]
        lines = [(s, l) for s, l in zip(starts, lines) if l.strip()]
        for s, l in lines:
            ws = indent_of(l)
            if sh.tabs and b" " in ws:
                fail("(5) spaces in the indentation of a tab-indented file")
            if not sh.tabs and b"\t" in ws:
                fail("(5) tabs in the indentation of a space-indented file")
        if sh.sibs and lines:
            first = indent_of(lines[0][1])
            wants = [indent_of(s) for s in sh.sibs]
            if first not in wants:
                fail("(5) the new entry is indented %r, its sibling %r" % (first, wants))
            # the inner lines copy the sibling's inner indentation
            for sib in sh.sibs:
                if indent_of(sib) != first or not sib.rstrip().endswith(b"{"):
                    continue
                ol = old.split(b"\n")
                idx = next((i for i, l in enumerate(ol) if l.rstrip(b"\r").startswith(sib)), None)
                if idx is None or idx + 1 >= len(ol) or len(lines) < 2:
                    continue
                if not lines[0][1].rstrip(b"\r").endswith(b"{"):
                    continue
                if indent_of(lines[1][1]) != indent_of(ol[idx + 1]):
                    fail("(5) inner lines indented %r, the sibling's %r"
                         % (indent_of(lines[1][1]), indent_of(ol[idx + 1])))

    def run_all(self, shapes):
        for sh in shapes:
            with self.subTest(shape=sh.key):
                try:
                    self.check_shape(sh)
                finally:
                    for dm in self.daemons:
                        dm.stop(expect_code=None)
                    self.daemons.clear()
                    for r in self.repos:
                        r.cleanup()
                    self.repos.clear()

    @unittest.skipUnless(have("nix-instantiate"), "needs nix-instantiate")
    def test_systematic_shapes(self):
        shapes = systematic()
        self.assertGreaterEqual(len(shapes), 54)
        self.run_all(shapes)

    @unittest.skipUnless(have("nix-instantiate"), "needs nix-instantiate")
    def test_special_shapes(self):
        self.run_all(specials())

    @unittest.skipUnless(have("nix-instantiate"), "needs nix-instantiate")
    def test_fixture_mutations(self):
        import tempfile
        tmp = tempfile.mkdtemp(prefix="ws-mut-")
        try:
            shapes = mutations(tmp)
        finally:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
        for sh in shapes:
            self.assertNotEqual(sh.text, fixture("%s" % next(f for f, _, _ in FIXTURE_REQS
                                                            if f.startswith(sh.key[4:6]))),
                                "mutation %s made no change" % sh.key)
        self.run_all(shapes)

    @classmethod
    def tearDownClass(cls):
        if REFUSED:
            sys.stderr.write("\nclean refusals (allowed for these shapes):\n  "
                             + "\n  ".join(REFUSED) + "\n")


if __name__ == "__main__":
    main()
