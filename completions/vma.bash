# bash completion for vma (libvma), also installed as vmarchive.
# Completes the commands, their options, archive and directory names, the
# codecs of --compress, and for `extract -d` the device names that
# `vma list <archive>` prints for the archive already on the line.
# SPDX-License-Identifier: MIT

# _vma_devices <vma> <archive>: the archive's disk names, one per line.
_vma_devices()
{
    local line
    "$1" list -- "$2" 2>/dev/null | while IFS= read -r line; do
        case $line in
        DEV:*devname:\ *) printf '%s\n' "${line#*devname: }" ;;
        esac
    done
}

_vma()
{
    COMPREPLY=()
    _vma_complete "$1"
    # bash replaces only the part of the word after its last '=' or ':'
    # (COMP_WORDBREAKS): drop that prefix from each answer.
    local brk=${_vma_cur%"${_vma_cur##*[=:]}"} i
    if [ -n "$brk" ]; then
        for i in "${!COMPREPLY[@]}"; do
            COMPREPLY[i]=${COMPREPLY[i]#"$brk"}
        done
    fi
    return 0
}

# _vma_complete <vma>: COMPREPLY for the whole word being typed, which is
# taken from COMP_LINE split at blanks (COMP_WORDS splits at '=' and ':'
# too, and "--compress=zstd" or "format=raw:disk=..." are one word here).
_vma_complete()
{
    local vma=$1 line=${COMP_LINE:0:COMP_POINT} words cword cur prev cmd
    local i archive=
    read -ra words <<<"$line"
    [[ $line == *[[:blank:]] ]] && words+=("")
    cword=$((${#words[@]} - 1))
    cur=${words[cword]}
    _vma_cur=$cur
    prev=
    [ "$cword" -ge 1 ] && prev=${words[cword - 1]}

    if [ "$cword" -le 1 ]; then
        COMPREPLY=($(compgen -W 'list config create extract verify checksum mount backup help --help --version' -- "$cur"))
        return 0
    fi
    cmd=${words[1]}
    if [ "$cmd" = help ]; then
        [ "$cword" = 2 ] && COMPREPLY=($(compgen -W 'list config create extract verify checksum mount backup' -- "$cur"))
        return 0
    fi

    # The archive: the first word after the command that is not an option
    # or an option's argument.
    for ((i = 2; i < cword; i++)); do
        case $cmd:${words[i]} in
        mount:-c | mount:-o) i=$((i + 1)) ;;
        mount:-*) ;;
        backup:--qmp | backup:--qga | backup:--fleecing-dir) i=$((i + 1)) ;;
        *:-c | *:-d | *:-r) i=$((i + 1)) ;;
        *:-*) ;;
        *) archive=${words[i]}; break ;;
        esac
    done

    case $cmd:$prev in
    extract:-d | checksum:-d)
        # Device names, comma-separated: complete the part after the last comma.
        local done_part= part=$cur devs
        case $cur in *,*) done_part=${cur%,*},; part=${cur##*,} ;; esac
        [ -n "$archive" ] || return 0
        # A leading ~ as bash would expand it (no eval of what was typed).
        devs=$(_vma_devices "$vma" "${archive/#\~/$HOME}")
        local IFS=$'\n'
        COMPREPLY=($(compgen -P "$done_part" -W "$devs" -- "$part"))
        return 0
        ;;
    mount:-c)
        COMPREPLY=($(compgen -d -- "$cur"))
        return 0
        ;;
    mount:-o)
        COMPREPLY=($(compgen -W 'allow_other' -- "$cur"))
        return 0
        ;;
    backup:--qmp | backup:--qga)
        # QMP and guest agent sockets (Proxmox VE: /var/run/qemu-server/).
        COMPREPLY=($(compgen -f -- "$cur"))
        return 0
        ;;
    backup:--fleecing-dir)
        COMPREPLY=($(compgen -d -- "$cur"))
        return 0
        ;;
    extract:-r | create:-c | backup:-c)
        COMPREPLY=($(compgen -f -- "$cur"))
        return 0
        ;;
    config:-c)
        [ -n "$archive" ] || return 0
        local IFS=$'\n'
        COMPREPLY=($("$vma" list -- "${archive/#\~/$HOME}" 2>/dev/null |
            sed -n 's/^CFG: size: [0-9]* name: //p' | grep -F -- "$cur"))
        return 0
        ;;
    create:-d)
        case $cur in
        format=*:*)
            # format=<fmt>:<devname>=<path>: the path is a file name.
            local rest=${cur#*:} pre
            [[ $rest == *=* ]] || return 0
            pre=${cur%%:*}:${rest%%=*}=
            COMPREPLY=($(compgen -P "$pre" -f -- "${rest#*=}"))
            ;;
        *)
            COMPREPLY=($(compgen -W 'format=raw: format=qcow2: format=vmdk: format=vdi: format=vhdx: format=qed:' -- "$cur"))
            compopt -o nospace 2>/dev/null
            ;;
        esac
        return 0
        ;;
    esac

    case $cur in
    --compress=*)
        COMPREPLY=($(compgen -P --compress= -W 'zstd zstd:1 zstd:3 zstd:19 gzip gzip:9 lzo none' -- "${cur#--compress=}"))
        return 0
        ;;
    --index=*)
        COMPREPLY=($(compgen -P --index= -W 'cache beside off' -- "${cur#--index=}"))
        return 0
        ;;
    --format=*)
        COMPREPLY=($(compgen -P --format= -W 'raw qcow2 vmdk vdi vhdx' -- "${cur#--format=}"))
        return 0
        ;;
    --output-format=*)
        COMPREPLY=($(compgen -P --output-format= -W 'text json' -- "${cur#--output-format=}"))
        return 0
        ;;
    -*)
        local opts
        case $cmd in
        list) opts='--output-format= --help' ;;
        config) opts='-c --help' ;;
        verify) opts='-v -p --progress --no-progress --output-format= --salvage --force-header --help' ;;
        checksum) opts='-d -p --progress --no-progress --output-format= --help' ;;
        extract) opts='-v -d -r -p --progress --no-progress --output-format= --format= --salvage --force-header --help' ;;
        create) opts='-v -c -d -p --progress --no-progress --compress= --uuid= --ctime= --help' ;;
        mount) opts='-f -o -c -r -n --index= --salvage --force-header --help' ;;
        backup) opts='-v -c -d -p --progress --no-progress --compress= --output-format= --qmp --qga --fleecing-dir --qmp-timeout= --cleanup --help' ;;
        *) return 0 ;;
        esac
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        [[ ${COMPREPLY[0]-} == *= ]] && compopt -o nospace 2>/dev/null
        return 0
        ;;
    esac

    # Plain words: the archive first, then (extract) the target directory,
    # (create) source paths.
    if [ -z "$archive" ] && [ "$cmd" != create ]; then
        # Archives (and directories to descend into).
        local IFS=$'\n'
        COMPREPLY=($(compgen -f -X '!*.vma*' -- "$cur") $(compgen -d -- "$cur"))
    elif [ -z "$archive" ]; then
        COMPREPLY=($(compgen -f -- "$cur"))
    elif [ "$cmd" = extract ]; then
        COMPREPLY=($(compgen -d -- "$cur"))
    elif [ "$cmd" = create ]; then
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
    return 0
}
# Only the name this file is installed as (meson: the tool_name option);
# vmarchive-pve's completion for `vma` sources this file and adds vma.
complete -F _vma -o filenames @TOOL_NAME@
